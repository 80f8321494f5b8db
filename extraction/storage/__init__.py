"""Reading and writing stored states: the ``.safetensors`` export, streamed writing, atomic writes,
the folder of shards, the torchrun/accelerate run, texts read as a stream, and stored files read back.
"""
