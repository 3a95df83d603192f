"""Interop with NVIDIA's tooling: Polygraphy runners and comparisons, ONNX export (all optional).

Nothing here is imported by `import flexrt`; `flexrt.interop.polygraphy` needs Polygraphy and
`flexrt.interop.onnx` needs onnx/onnxscript (and onnxruntime to run the file).
"""
