"""Export toolchain: checkpoint -> model bundle (torch weights, ONNX/TFLite INT8 encoders)."""
