"""Counting what a forward pass ran: :class:`BlockCalls`, shared by the tests of every caller that
stops the pass after the deepest layer it needs (a count of calls, never a time)."""

from extraction.capture import find_blocks, hooks_reproduce_hidden_states


class BlockCalls:
    """Counts the completed calls of each block and of lm_head while attached (forward hooks: they
    fire once the module has run, so a block whose pre-hook stopped the pass is not counted)."""

    def __init__(self, loaded):
        # The hooks' once-per-model check runs every block: done here, so only the caller's passes count.
        hooks_reproduce_hidden_states(loaded)
        self.blocks = find_blocks(loaded.model, loaded.num_hidden_layers)
        self.lm_head = loaded.lm_head
        self.calls = [0] * len(self.blocks)
        self.lm_head_calls = 0

    def __enter__(self):
        def count(index):
            def hook(module, args, output):
                self.calls[index] += 1

            return hook

        def count_head(module, args, output):
            self.lm_head_calls += 1

        self.handles = [block.register_forward_hook(count(i)) for i, block in enumerate(self.blocks)]
        self.handles.append(self.lm_head.register_forward_hook(count_head))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def ran_beyond(self, deepest: int) -> bool:
        """Whether any block from ``deepest`` on (the blocks ``hidden_states[deepest]`` does not need) ran."""
        return any(self.calls[deepest:])
