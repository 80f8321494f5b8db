"""Reading and writing stored states: the ``.safetensors`` export, streamed writing, atomic writes,
the folder of shards, the torchrun/accelerate run, texts read as a stream, and stored files read back.

Modules: :mod:`.export` (:func:`extract_to_file`, its verification), :mod:`.metadata` (what a file says
about how it was made, the layers), :mod:`.safetensors_writer` (streamed writing), :mod:`.atomic`
(every atomic write), :mod:`.stored_states` and :mod:`.states_record` (files read back and checked),
:mod:`.shards` (the folder format, index.json, merge), :mod:`.sharded_export` (the run and its
collective calls), :mod:`.shard_steps` (a rank's own steps), :mod:`.distributed` (ranks, broadcast)
and :mod:`.text_stream` (TXT/JSONL read from byte offsets).
"""
