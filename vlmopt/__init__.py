"""vlmopt: quantize, benchmark and plan VLM serving."""
__version__ = "0.1.0"
