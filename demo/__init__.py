"""The demo's workloads and harness: a real pretrained model (PP-OCR on ONNX Runtime) served
over HTTP that pushes its latencies, an open-loop HTTP load generator with a load step, an
elastic batch inference job (Silero VAD on ONNX Runtime) and a background indexer, plus the
harness that runs them under nxrd and the report; and a numpy MLP for the thread-sizing
benchmark (bench/threads.py). Needs the `demo` extra (numpy, ONNX Runtime, Pillow;
matplotlib for the plot); scripts/setup.sh installs the models' wheels."""
