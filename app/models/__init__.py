"""The models this instance serves, whatever process runs them: the registry and each kind's default model, a
served model version (served_model) composed of its loader (loading: file check, session, thread and batch-size
tuning, warm-up), its request pipeline (request_pipeline: decode or tokenize, collate, run, answer), the
executor the pipeline runs batches on (executors), its intake (intake: what is recorded, when a batch runs
inline) and its batcher (batcher, with batch_selection), and ONNX Runtime's providers and threads (runtime).
"""
