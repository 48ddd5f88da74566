"""The models this instance serves: the registry and each kind's default, loading and tuning a model, the
request pipeline (decode or tokenize, batch, run, answer), the batcher and ONNX Runtime's providers and
threads.
"""
