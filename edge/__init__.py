"""The edge agent: capture, INT8 encoding, DTX, packetizing, lossless MQTT publishing.

Never imports torch: a Raspberry Pi runs this with NumPy, ONNX Runtime or LiteRT, paho-mqtt.
"""
