"""Train image and text classifiers in PyTorch, evaluate them and export them to the ONNX model repository.

Run `python -m training --help`. The package never imports `app/`; it shares only `model_repository`.
"""
