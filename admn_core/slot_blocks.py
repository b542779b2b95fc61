"""Batch-1 inference with the allocation kept on the device: controller → top-L → the chosen blocks → head, with
no host synchronisation in between, so a GPU can run all of it as one CUDA graph per (controller, budget).

Why: `FastPath`'s per-block graphs need the host to read the controller's mask before it can pick which block graphs
to replay. At batch 1 on a GPU that read, and the launches queued after it, are most of the fixed latency: far
more than one ViT-B block costs.

How: with equal block costs the budget fixes *how many* blocks run beyond the always-on block 0s (K = L − M), only
not *which*. The chosen blocks run through K slots. Slot k copies the parameters of the k-th chosen block (ordered
modality-major, then by depth, so each modality's blocks keep their order) from a table holding every block's
parameters into one static buffer — an `index_select` by a device index — and runs that block on the chosen
modality's tokens. Every shape is static, so the whole inference is capturable.

Cost: a second copy of the backbone blocks' weights (the table) and one parameter copy per slot (a ViT-B block is
14 MB in bf16, a copy taking a sizeable fraction of the block's own time). On a host that launches work quickly
the gathers cost more than the host read saves, so `FastPath` uses this only
when asked (ADMN_FASTPATH_SLOT_GRAPH=1); a host that is slow to launch work (an embedded board) may gain.
Modalities may differ in token count (tokens are padded to the longest, and padding keys are masked out of
attention); they must agree in width, heads, MLP width, LayerNorm eps, view count and the blocks' form (`_LeanBlock`).
"""

from __future__ import annotations

import math

import torch

from admn_core.allocation import select_layers

_ALIGN = 64  # elements: each parameter's view in a flat row starts 16-byte (and wider) aligned


def _block_tensors(lean) -> list[torch.Tensor]:
    """A timm ViT block's parameters in `_lean_block_forward`'s argument order."""
    block = lean.block
    attention, mlp = block.attn, block.mlp
    qkv_bias = attention.qkv.bias
    if qkv_bias is None:  # a block without qkv bias is the same function with a zero bias
        qkv_bias = attention.qkv.weight.new_zeros(attention.qkv.weight.shape[0])
    return [block.norm1.weight, block.norm1.bias, attention.qkv.weight, qkv_bias, attention.proj.weight,
            attention.proj.bias, block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias,
            mlp.fc2.weight, mlp.fc2.bias]


class SlotBlocks:
    """Every backbone block's parameters as rows of one table [M·depth, P]; `load(row)` copies a row chosen on the
    device into the slot buffer, `run(x, key_mask)` runs the block now in the slot."""

    @staticmethod
    def supported(config, lean_blocks: dict[str, list]) -> bool:
        modalities = config.modalities
        blocks = [block for spec in modalities for block in lean_blocks[spec.name]]
        if len(modalities) < 2 or not blocks or not all(block.supported for block in blocks):
            return False
        shapes = {tuple(tuple(t.shape) for t in _block_tensors(block)) for block in blocks}
        forms = {(block.heads, block.head_dim, block.norm1[3], block.norm2[3]) for block in blocks}
        dtypes = {t.dtype for block in blocks for t in _block_tensors(block)}
        views = {len(spec.views) for spec in modalities}
        return len(shapes) == 1 and len(forms) == 1 and len(dtypes) == 1 and len(views) == 1

    def __init__(self, config, lean_blocks: dict[str, list]):
        if not self.supported(config, lean_blocks):
            raise ValueError("the backbones' blocks differ in shape, form or dtype (or a block is not a plain ViT "
                             "block); slots need one block form for every modality")
        names = config.modality_names
        first = lean_blocks[names[0]][0]
        self.heads, self.head_dim, self.eps1, self.eps2 = first.heads, first.head_dim, first.norm1[3], first.norm2[3]
        self.depth = config.blocks_per_backbone
        reference = _block_tensors(first)
        self.layout = []  # (offset, shape) per parameter
        offset = 0
        for tensor in reference:
            self.layout.append((offset, tuple(tensor.shape)))
            offset += -(-tensor.numel() // _ALIGN) * _ALIGN
        with torch.no_grad():
            self.table = reference[0].new_zeros(len(names) * self.depth, offset)  # [M·depth, P]
            for m, name in enumerate(names):
                for index, block in enumerate(lean_blocks[name]):
                    row = self.table[m * self.depth + index]
                    for (start, _), tensor in zip(self.layout, _block_tensors(block), strict=True):
                        row[start:start + tensor.numel()].copy_(tensor.reshape(-1))
        self.slot = self.table.new_empty(1, offset)  # [1, P], static: the graphs read the slot's views
        self.views = [self.slot[0, start:start + math.prod(shape)].view(shape) for start, shape in self.layout]

    def load(self, row: torch.Tensor) -> None:
        """row: int64 [1] on the device, = modality · depth + block."""
        torch.index_select(self.table, 0, row, out=self.slot)

    def run(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """The block in the slot on x [N, T, D] → [N, T, D]; key_mask: additive [1, 1, 1, T] or None."""
        from admn_core.fastpath import _lean_block_forward  # the one functional block form (fastpath imports us)

        w = self.views
        return _lean_block_forward(x, w[0], w[1], self.eps1, w[2], w[3], w[4], w[5], w[6], w[7], self.eps2,
                                   w[8], w[9], w[10], w[11], self.heads, self.head_dim, False, key_mask)


class DeviceAllocatedForward:
    """`__call__(controller, inputs, budget, costs)` at batch 1 → (bool mask [1, M, depth], head output), equal to
    `select_layers(controller(inputs))` then `model(inputs, mask)`, issuing no host synchronisation.

    Runs anywhere (the CPU tests compare it with the eager model); `FastPath` captures it in one CUDA graph."""

    @staticmethod
    def supported(fast) -> bool:
        return SlotBlocks.supported(fast.config, fast.blocks)

    def __init__(self, fast):
        self.fast = fast
        self.config = fast.config
        self.slots = SlotBlocks(self.config, fast.blocks)
        specs = self.config.modalities
        self.token_counts = [spec.num_tokens for spec in specs]
        longest = max(self.token_counts)
        width = specs[0].embed_dim
        table = self.slots.table
        # Token state of every modality [M, V, T_max, D], outside any graph: it carries tokens across slots.
        self.state = table.new_zeros(len(specs), len(specs[0].views), longest, width)
        self.key_masks = None
        if len(set(self.token_counts)) > 1:  # additive key masks [M, 1, 1, 1, T_max]: padding keys get −inf
            self.key_masks = table.new_zeros(len(specs), 1, 1, 1, longest)
            for m, count in enumerate(self.token_counts):
                self.key_masks[m, ..., count:] = float("-inf")

    def _key_mask(self, modality: torch.Tensor | int) -> torch.Tensor | None:
        if self.key_masks is None:
            return None
        if isinstance(modality, int):
            return self.key_masks[modality]
        return self.key_masks.index_select(0, modality)[0]

    def __call__(self, controller, inputs: dict[str, torch.Tensor], budget: int, costs: torch.Tensor):
        fast, depth = self.fast, self.slots.depth
        specs = self.config.modalities
        if next(iter(inputs.values())).shape[0] != 1:
            raise ValueError("the device-allocated forward serves batch 1 (batches go through allocation groups)")
        if not bool((costs == 1).all()):
            raise ValueError("unequal block costs are allocated by a greedy pass on the host")
        mask = select_layers(fast.controller_logits(controller, inputs).float(), budget, costs)  # [1, M, depth]
        # The chosen blocks beyond block 0, in (modality, depth) order: a stable sort puts the True entries first.
        chosen = mask[0, :, 1:].reshape(-1)  # [M·(depth − 1)]
        extra = min(budget, len(specs) * depth) - len(specs)  # = chosen.sum(), known from the budget alone
        order = torch.sort((~chosen).to(torch.int32), stable=True).indices[:extra]  # [K]
        modality = torch.div(order, depth - 1, rounding_mode="floor")
        rows = modality * depth + order % (depth - 1) + 1  # table rows [K]
        for m, (spec, tokens) in enumerate(zip(specs, fast._embed(inputs).values(), strict=True)):
            self.state[m, :, :tokens.shape[1]].copy_(tokens)  # [V, T_m, D]
            self.state[m].copy_(fast.blocks[spec.name][0](self.state[m], self._key_mask(m)))  # block 0: always on
        for k in range(extra):
            which = modality[k:k + 1]
            self.slots.load(rows[k:k + 1])
            tokens = self.state.index_select(0, which)[0]  # [V, T_max, D]
            self.state.index_copy_(0, which, self.slots.run(tokens, self._key_mask(which))[None])
        final = {spec.name: self.state[m, :, :count] for m, (spec, count)
                 in enumerate(zip(specs, self.token_counts, strict=True))}
        return mask, fast._head(final, 1)
