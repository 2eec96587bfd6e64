"""`vlmopt benchmark`: serve each variant with vLLM and measure it under image+text load."""
