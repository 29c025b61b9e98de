"""The cloud receiver: MQTT subscriber, stream assembly, batched generative decoding, sinks."""
