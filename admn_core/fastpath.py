"""Fast inference path: the same weights and the same allocation semantics as the eager model, less overhead.

Eager (`ADMNModel.forward`) stays the reference; this path must match it within floating-point tolerance
(test/test_fastpath.py). What it changes is only *how* the work is issued:

* GPU (any CUDA device): CUDA graphs, captured lazily and replayed for any allocation:
  - one graph per (controller, batch size): controller → top-L selection, writing the mask on the device;
  - one graph per batch size for the patch embeddings of every modality (launched before the mask is read,
    so it runs while the host waits for the mask);
  - one graph per (modality, block, rows) — each block's graph runs the block on a static token buffer in
    place, so any allocation is a sequence of block replays and only active blocks ever run;
  - one graph per batch size for final norms → adapters → fusion → head.
  The single host synchronisation is the [B, M, depth] mask read (B·M·12 booleans) that decides which block
  graphs to replay; the embeddings overlap it. Eager GPU issues ~20 kernels per block from Python; a replay
  issues one launch. Any dtype the engine was built with (bf16 / fp16 weights) is used as is.
  Batch 1 with given masks: an allocation seen a few times (Upper Bound, Naive, any fixed one) gets one graph of
  its own (embeddings → its blocks → head). Opt-in (ADMN_FASTPATH_SLOT_GRAPH=1): controller → top-L → head as one
  graph with the chosen blocks run through slots (`admn_core.slot_blocks`), for hosts slow to launch work.
* CPU: no graphs; a lean functional forward with the same weights: fewer module calls per block, explicit
  attention for short sequences where it beats the fused CPU kernel (chosen once by timing), and the
  controller's tiny convolutions through the non-oneDNN kernels where those are faster (also timed once).
  With onnxruntime installed (float32), the stages that run whatever the budget — controller + patch embeddings +
  every block 0 as the "front", and readouts → fusion → head — run as ONNX Runtime sessions where they are
  faster than PyTorch on the host (`admn_core.onnx_cpu`; timed once per stage and batch size; `onnx="off"` or
  ADMN_FASTPATH_ONNX=0 keeps PyTorch). The front is split into `front_threads` stages run at once (the controller
  beside the embeddings and block 0s; PyTorch's thread count by default where OpenMP's spin is capped).
* Both: the controller's per-modality conv stems, and every backbone's readout + fusion adapter, run as one call
  for all modalities where their shapes agree (`admn_core.fused`; off with ADMN_FASTPATH_FUSED=0).

Allocation-grouped batching is inherited: rows are grouped by identical mask per modality, and each group runs
only its own blocks (on the GPU through the block graphs of that group's row count).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

import admn_core
from admn_core.allocation import select_layers
from admn_core.fused import FusedReadoutAdapters, FusedStems
from admn_core.models.backbone import LayerDropViT, group_rows_by_mask
from admn_core.models.controller import QoIController
from admn_core.models.fusion import TransformerEncoder
from admn_core.models.task_model import ADMNModel
from admn_core.onnx_cpu import OnnxStage, onnx_runtime_available
from admn_core.slot_blocks import DeviceAllocatedForward

MAX_ALLOCATION_GRAPHS = 32  # one-graph allocations kept per batch-1 state (each holds its own launch plan)
ALLOCATION_GRAPH_AFTER = 3  # sightings of an allocation before it gets its own graph
ONNX_POLICIES = ("off", "timed", "always")


def _timed(function: Callable[[], object], repeats: int = 5) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def _manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                      key_mask: torch.Tensor | None = None) -> torch.Tensor:
    scores = torch.matmul(q * scale, k.transpose(-2, -1))
    return torch.softmax(scores if key_mask is None else scores + key_mask, dim=-1).matmul(v)


class _MkldnnOff:
    """Run a region without oneDNN (faster for the controller's tiny convolutions on some CPUs)."""

    def __enter__(self):
        self.previous = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)

    def __exit__(self, *exc):
        torch._C._set_mkldnn_enabled(self.previous)


class _LeanBlock:
    """A timm ViT Block's inference forward written with functional ops on the block's own parameters.

    Falls back to the module itself if the block has anything this form does not cover (layer scale, q/k norm,
    gating, a non-GELU activation, ...)."""

    def __init__(self, block: nn.Module):
        self.block = block
        attn, mlp = block.attn, block.mlp
        identity = lambda m: m is None or isinstance(m, (nn.Identity, nn.Dropout))  # noqa: E731
        self.supported = (
            all(identity(getattr(block, n, None)) for n in ("ls1", "ls2", "drop_path1", "drop_path2"))
            and all(identity(getattr(attn, n, None)) for n in ("q_norm", "k_norm", "norm", "attn_drop", "proj_drop"))
            and getattr(attn, "gate", None) is None
            and isinstance(getattr(mlp, "act", None), nn.GELU) and getattr(mlp.act, "approximate", "none") == "none"
            and identity(getattr(mlp, "norm", None))
            and isinstance(block.norm1, nn.LayerNorm) and isinstance(block.norm2, nn.LayerNorm))
        if not self.supported:
            return
        self.heads = attn.num_heads
        self.head_dim = attn.qkv.weight.shape[0] // (3 * self.heads)
        self.scale = self.head_dim ** -0.5
        self.norm1 = (block.norm1.normalized_shape, block.norm1.weight, block.norm1.bias, block.norm1.eps)
        self.norm2 = (block.norm2.normalized_shape, block.norm2.weight, block.norm2.bias, block.norm2.eps)
        self.qkv = (attn.qkv.weight, attn.qkv.bias)
        self.proj = (attn.proj.weight, attn.proj.bias)
        self.fc1 = (mlp.fc1.weight, mlp.fc1.bias)
        self.fc2 = (mlp.fc2.weight, mlp.fc2.bias)
        self.manual_attention = False

    def __call__(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.supported:
            if key_mask is not None:
                raise ValueError("a key mask needs a block this form covers")
            return self.block(x)
        return _lean_block_forward(x, *self.norm1[1:], *self.qkv, *self.proj, *self.norm2[1:], *self.fc1, *self.fc2,
                                   self.heads, self.head_dim, self.manual_attention, key_mask)


def _lean_block_forward(x, norm1_weight, norm1_bias, eps1, qkv_weight, qkv_bias, proj_weight, proj_bias,
                        norm2_weight, norm2_bias, eps2, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
                        heads: int, head_dim: int, manual_attention: bool,
                        key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One pre-norm ViT block on its parameters: [N, T, D] → [N, T, D] (timm `Block` at inference).
    key_mask: None, or additive [1, 1, 1, T] (0 or −inf): keys that are padding (`admn_core.slot_blocks`)."""
    batch, tokens, width = x.shape
    h = F.layer_norm(x, (width,), norm1_weight, norm1_bias, eps1)
    qkv = F.linear(h, qkv_weight, qkv_bias).view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each [N, heads, T, head_dim]
    if manual_attention:
        attended = _manual_attention(q, k, v, head_dim ** -0.5, key_mask)
    else:
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    x = x + F.linear(attended.transpose(1, 2).reshape(batch, tokens, -1), proj_weight, proj_bias)
    h = F.layer_norm(x, (width,), norm2_weight, norm2_bias, eps2)
    return x + F.linear(F.gelu(F.linear(h, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)


def _lean_encoder(encoder: TransformerEncoder, tokens: torch.Tensor, manual_attention: bool) -> torch.Tensor:
    """The fusion / controller encoder (pre-norm, qkv without bias) with functional ops."""
    x = tokens + encoder._positions(tokens)
    batch, count, _ = x.shape
    for attention, feed_forward in encoder.layers:
        norm = attention.norm
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        qkv = F.linear(h, attention.to_qkv.weight).view(batch, count, 3, attention.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if manual_attention:
            attended = _manual_attention(q, k, v, q.shape[-1] ** -0.5)
        else:
            attended = F.scaled_dot_product_attention(q, k, v)
        x = x + F.linear(attended.transpose(1, 2).reshape(batch, count, -1), attention.to_out.weight,
                         attention.to_out.bias)
        norm, first, _, second = feed_forward.net
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = x + F.linear(F.gelu(F.linear(h, first.weight, first.bias)), second.weight, second.bias)
    norm = encoder.norm
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)




def _patch_embed_is_plain(backbone: LayerDropViT) -> bool:
    """A non-overlapping, unpadded conv patch embedding without a norm: exactly a matmul over patches."""
    patch_embed = backbone.patch_embed
    proj = patch_embed.proj
    return (isinstance(getattr(patch_embed, "norm", nn.Identity()), nn.Identity) and proj.kernel_size == proj.stride
            and proj.padding in ((0, 0), 0) and not getattr(patch_embed, "dynamic_img_pad", False))


def _embed_as_matmul(backbone: LayerDropViT, x: torch.Tensor) -> torch.Tensor:
    """backbone.embed(x) with the patch convolution written as one matmul: [N, C, H, W] → [N, 1 + P, D].

    On a CPU at batch 1 the oneDNN convolution costs ~85 µs per modality for what is a [P, C·p·p] × [C·p·p, D]
    product (~15 µs); the flatten order (C, then the p×p kernel) and the row-major patch order match the conv.
    """
    proj = backbone.patch_embed.proj
    n, c, h, w = x.shape
    ph, pw = proj.kernel_size
    patches = x.reshape(n, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c * ph * pw)
    tokens = F.linear(patches, proj.weight.reshape(proj.out_channels, -1), proj.bias)
    return torch.cat([backbone.cls_token.expand(n, -1, -1), tokens], dim=1) + backbone.pos_embed


class FastPath:
    """Fast forward of an `ADMNModel` and its controllers on the device they already live on.

    `select(name, inputs, budget, costs)` → bool masks [B, M, depth] on the device (controller + top-L);
    `forward(inputs, masks)` → the head's output, equal to `model(inputs, masks)` within tolerance.
    `graphs=None` uses CUDA graphs exactly when the model is on a CUDA device (unless ADMN_FASTPATH_GRAPHS=0).
    """

    def __init__(self, model: ADMNModel, controllers: dict[str, QoIController] | None = None,
                 graphs: bool | None = None, max_batch_sizes: int = 4, tune: bool = True, onnx: str | None = None,
                 front_threads: int | None = None):
        self.model = model
        self.controllers = dict(controllers or {})
        self.config = model.config
        self.device = model.head_device
        if graphs is None:  # ADMN_FASTPATH_GRAPHS=0 keeps a GPU on the lean (graph-free) forward
            graphs = self.device.type == "cuda" and os.environ.get("ADMN_FASTPATH_GRAPHS", "1") != "0"
        self.graphs = bool(graphs)
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.blocks = {spec.name: [_LeanBlock(b) for b in model.backbones[spec.name].blocks]
                       for spec in self.config.modalities}
        self.fusion_manual_attention = False
        self.controller_manual_attention = False
        self.controller_without_mkldnn = False
        self.max_batch_sizes = max_batch_sizes
        # Per-modality small layers run once for all modalities where their shapes agree (admn_core.fused);
        # ADMN_FASTPATH_FUSED=0 runs them one modality at a time (for A/B timing or a custom model's debugging).
        fuse = os.environ.get("ADMN_FASTPATH_FUSED", "1") != "0"
        self.fused_stems = {id(c): FusedStems(self.config, c) for c in self.controllers.values()
                            if fuse and FusedStems.supported(self.config, c)}
        self.fused_readout = FusedReadoutAdapters(model) if fuse and FusedReadoutAdapters.supported(model) else None
        # Batch 1 on a GPU (README "FLOPs and latency"):
        # - given masks: an allocation seen ALLOCATION_GRAPH_AFTER times (Upper Bound, Naive, a fixed allocation)
        #   gets one graph for embeddings → its blocks → head, one launch instead of one per block. On by default;
        #   ADMN_FASTPATH_ALLOCATION_GRAPHS=0 turns it off.
        # - controller → top-L → blocks → head as one graph through slot blocks (admn_core.slot_blocks: no host read
        #   of the mask): on a fast host each slot's parameter gather costs more than the host read it saves, so it
        #   is off by default; ADMN_FASTPATH_SLOT_GRAPH=1 turns it on (for a host that is slow to launch work, e.g.
        #   an embedded board).
        self.allocation_graphs_at_batch_1 = os.environ.get("ADMN_FASTPATH_ALLOCATION_GRAPHS", "1") != "0"
        # The controller (a chain of small kernels that leave the GPU mostly idle) on a second stream beside the
        # patch embeddings and every block 0, which need only the inputs too: one graph, two branches.
        # ADMN_FASTPATH_CONCURRENT_CONTROLLER=0 runs them one after the other.
        self.concurrent_controller = os.environ.get("ADMN_FASTPATH_CONCURRENT_CONTROLLER", "1") != "0"
        self.slot_graph_at_batch_1 = os.environ.get("ADMN_FASTPATH_SLOT_GRAPH", "0") == "1"
        self._device_allocated: DeviceAllocatedForward | bool | None = False  # False: not built yet
        # CPU, float32: the fixed stages (controller, embeddings, head) as ONNX Runtime sessions (admn_core.onnx_cpu).
        # onnx: "timed" (default) keeps a session where it is faster on the host (timed once per stage and batch
        # size), "always" keeps every session that exports, "off" runs PyTorch throughout (also without
        # onnxruntime). None → ADMN_FASTPATH_ONNX: 0 = off, always = always, anything else = timed.
        if onnx is None:
            onnx = {"0": "off", "always": "always"}.get(os.environ.get("ADMN_FASTPATH_ONNX", ""), "timed")
        if onnx not in ONNX_POLICIES:
            raise ValueError(f"onnx must be one of {ONNX_POLICIES}, got {onnx!r}")
        self.onnx_policy = onnx
        # The front's ONNX stages run on this many threads at once (`_front`); None → ADMN_FASTPATH_FRONT_THREADS,
        # else PyTorch's thread count where OpenMP's spin is capped (admn_core/__init__:
        # otherwise a spinning OpenMP worker holds the second core and the split gains nothing), else 1.
        # 1 runs the whole front as one stage.
        if front_threads is None:
            default = torch.get_num_threads() if admn_core.OPENMP_SPIN_CAPPED else 1
            text = os.environ.get("ADMN_FASTPATH_FRONT_THREADS", "0")
            try:
                front_threads = int(text) or default
            except ValueError:
                raise ValueError(f"ADMN_FASTPATH_FRONT_THREADS must be an integer, got {text!r}") from None
        if front_threads < 1:
            raise ValueError(f"front_threads must be at least 1, got {front_threads}")
        self.front_threads = front_threads
        self._front_pool: ThreadPoolExecutor | None = None
        self.onnx_stages = (onnx != "off" and self.device.type == "cpu" and not self.graphs
                            and onnx_runtime_available() and next(model.parameters()).dtype == torch.float32)
        self._onnx: OrderedDict[tuple, OnnxStage | None] = OrderedDict()  # None: PyTorch was faster (or failed)
        self._graph_state: OrderedDict[int, _BatchGraphs] = OrderedDict()
        self._pool = None
        self.counters = {"block_runs": 0, "graph_captures": 0, "graph_replays": 0, "one_graph_replays": 0,
                         "onnx_runs": 0, "parallel_fronts": 0}
        if tune and self.device.type == "cpu":
            self._tune_cpu()

    # ----------------------------------------------------------------------------------------------------------
    # CPU choices, timed once on the host with the real shapes (the outputs are equal either way).
    @torch.inference_mode()
    def _tune_cpu(self) -> None:
        dtype = next(self.model.parameters()).dtype
        for spec in self.config.modalities:
            blocks = self.blocks[spec.name]
            if not blocks or not blocks[0].supported:
                continue
            lean = blocks[0]
            q = torch.randn(len(spec.views), lean.heads, spec.num_tokens, lean.head_dim, dtype=dtype)
            manual = _timed(lambda q=q, lean=lean: _manual_attention(q, q, q, lean.scale))
            fused = _timed(lambda q=q: F.scaled_dot_product_attention(q, q, q))
            for block in blocks:
                if block.supported:
                    block.manual_attention = manual < fused
        # Fusion and controller encoders see a handful of tokens: explicit attention is never slower there.
        self.fusion_manual_attention = True
        self.controller_manual_attention = True
        if self.controllers and torch.backends.mkldnn.is_available():
            controller = next(iter(self.controllers.values()))
            inputs = {spec.name: torch.randn(1, len(spec.views), spec.channels, *spec.input_size, dtype=dtype)
                      for spec in self.config.modalities}
            with_mkldnn = _timed(lambda: self._stem_tokens(controller, inputs))
            with _MkldnnOff():
                without = _timed(lambda: self._stem_tokens(controller, inputs))
            self.controller_without_mkldnn = without < 0.9 * with_mkldnn

    # ----------------------------------------------------------------------------------------------------------
    # Controller → allocation.
    def _stem_tokens(self, controller: QoIController, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The controller's stem tokens [B, M·V, E] (modality-major), fused across modalities where possible."""
        fused = self.fused_stems.get(id(controller))
        if fused is not None:
            return fused(inputs)
        tokens = []
        for modality in self.config.modalities:
            x = inputs[modality.name]
            batch, views = x.shape[:2]
            tokens.append(controller.stems[modality.name](x.flatten(0, 1)).view(batch, views, -1))
        return torch.cat(tokens, dim=1)

    def controller_logits(self, controller: QoIController, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Layer logits [B, M, depth] (the controller's forward without its corruption head)."""
        names = self.config.modality_names
        return self._staged(("controller", id(controller)),
                            lambda *frames: self._controller_logits(controller, dict(zip(names, frames))),
                            [inputs[name] for name in names])

    def _controller_logits(self, controller: QoIController, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.controller_without_mkldnn:
            with _MkldnnOff():
                tokens = self._stem_tokens(controller, inputs)
        else:
            tokens = self._stem_tokens(controller, inputs)
        tokens = torch.cat([controller.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        e_corr = _lean_encoder(controller.encoder, tokens, self.controller_manual_attention)[:, 0]
        return controller.layer_logits(e_corr).view(-1, controller.num_modalities, controller.depth)

    @torch.inference_mode()
    def select(self, name: str, inputs: dict[str, torch.Tensor], budget: int, costs: torch.Tensor) -> torch.Tensor:
        """Controller `name` + top-L selection at `budget` → bool masks [B, M, depth] on the device."""
        controller = self.controllers[name]

        def run(tensors):
            return select_layers(self.controller_logits(controller, tensors).float(), budget, costs)

        if not self.graphs or not bool((costs == 1).all()):  # the unequal-cost greedy pass runs on the host
            return run(inputs)
        state = self._state_for(inputs)
        state.load(inputs)
        graph, mask = state.select_graph(name, budget, lambda: run(state.inputs))
        graph.replay()
        self.counters["graph_replays"] += 1
        return mask.clone()

    @torch.inference_mode()
    def select_and_forward(self, name: str, inputs: dict[str, torch.Tensor], budget: int, costs: torch.Tensor):
        """`select` then `forward` → (bool masks [B, M, depth], output); equal to running them in turn.

        On a GPU, block 0 of every modality — on for every row whatever the controller picks (`select_layers`) — is
        queued with the patch embeddings before the one mask read, so the host waits once, for work that had to run
        anyway; the controller runs beside them on a second stream (`concurrent_controller`). (A CPU runs them in
        turn: the controller on a second thread gained ≤ 6 % at the tiny preset's batch 1 on 2 cores — its ops are
        too small to leave the GIL for long — so it was not kept.)"""
        self._check_inputs(inputs)
        if self.graphs and bool((costs == 1).all()):
            return self._select_and_forward_graphs(name, inputs, budget, costs)
        if self.graphs:
            masks = self.select(name, inputs, budget, costs)
            return masks, self.forward(inputs, masks)
        return self._select_and_forward_lean(name, inputs, budget, costs)

    def _select_and_forward_lean(self, name: str, inputs: dict[str, torch.Tensor], budget: int, costs: torch.Tensor):
        """CPU: everything that needs only the inputs — controller logits, patch embeddings and block 0 of every
        modality (on for every row, `select_layers`) — as the front (`_front`), then top-L on the host, then the
        chosen blocks from 1 on and the head."""
        logits, after_first = self._front(self.controllers[name], inputs)
        self.counters["block_runs"] += len(after_first)
        masks = select_layers(logits.float(), budget, costs)
        return masks, self._forward_lean(inputs, masks, after_first, first_block=1)

    def front_groups(self) -> list[tuple[tuple[str, ...], bool]]:
        """How the front is split: [(modalities, with the controller)] — one group per front thread; modality g
        goes to group g mod G, the controller to the last group (alone when there are more threads than
        modalities). One group: the whole front as one stage."""
        names = self.config.modality_names
        count = max(1, min(self.front_threads, len(names) + 1))
        return [(tuple(names[g::count]), g == count - 1) for g in range(count)]

    def _front(self, controller: QoIController, inputs: dict[str, torch.Tensor]):
        """→ (layer logits [B, M, depth], {modality: tokens after block 0 [B·V, 1 + P, D]}).

        With ONNX Runtime stages and G = `front_threads` > 1 the front runs as G stages at once, one per thread
        (ORT releases the GIL; each stage runs on its caller's thread): the controller beside the embeddings and
        block 0s, which at batch 1 each have too little work to spread over cores from inside. This part runs
        whatever the budget, so it is where a second core shortens the latency floor. The stages of groups without
        the controller are shared by every controller. A group whose stage stays in PyTorch (timing or a failed
        export) makes the front run its groups in turn on this thread (PyTorch's own threads already share cores).
        """
        names = self.config.modality_names
        groups = self.front_groups()
        parts = []
        for members, with_controller in groups:
            used = names if with_controller else members  # the controller reads every modality

            def part(*frames, members=members, used=used, with_controller=with_controller):
                tensors = dict(zip(used, frames))
                tokens = tuple(self.blocks[m][0](self._embed_one(m, tensors[m])) for m in members)
                return (self._controller_logits(controller, tensors), *tokens) if with_controller else tokens

            key = ("front", id(controller) if with_controller else None, members)
            tensors = [inputs[n] for n in used]
            parts.append((self._stage_for(key, part, tensors) or part, tensors))
        onnx_parts = sum(isinstance(call, OnnxStage) for call, _ in parts)
        self.counters["onnx_runs"] += onnx_parts
        if len(parts) > 1 and onnx_parts == len(parts):
            if self._front_pool is None:
                self._front_pool = ThreadPoolExecutor(len(parts) - 1, thread_name_prefix="admn-front")
            futures = [self._front_pool.submit(call, *tensors) for call, tensors in parts[1:]]
            outputs = [parts[0][0](*parts[0][1])] + [future.result() for future in futures]
            self.counters["parallel_fronts"] += 1
        else:
            outputs = [call(*tensors) for call, tensors in parts]
        logits = outputs[-1][0]
        after_first = {}
        for (members, with_controller), output in zip(groups, outputs):
            after_first.update(zip(members, output[1:] if with_controller else output))
        return logits, after_first

    # ----------------------------------------------------------------------------------------------------------
    # Masked model forward.
    def _check_inputs(self, inputs: dict[str, torch.Tensor]) -> None:
        for spec in self.config.modalities:
            x = inputs.get(spec.name)
            if x is None:
                raise KeyError(f"missing input for modality {spec.name!r}; got {sorted(inputs)}")
            if x.dim() != 5 or x.shape[1] != len(spec.views):
                raise ValueError(f"{spec.name}: expected [B, {len(spec.views)}, C, H, W], got {list(x.shape)}")

    @torch.inference_mode()
    def forward(self, inputs: dict[str, torch.Tensor], masks: torch.Tensor | None = None):
        self._check_inputs(inputs)
        batch = next(iter(inputs.values())).shape[0]
        depth = self.config.blocks_per_backbone
        if masks is None:
            masks = torch.ones(batch, len(self.config.modalities), depth, dtype=torch.bool, device=self.device)
        if masks.shape != (batch, len(self.config.modalities), depth):
            expected = [batch, len(self.config.modalities), depth]
            raise ValueError(f"masks must be {expected}, got {list(masks.shape)}")
        if self.graphs:
            return self._forward_graphs(inputs, masks)
        return self._forward_lean(inputs, masks)

    __call__ = forward

    def _embed(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = self.config.modality_names

        def embed(*frames):
            embedded = self._embed_torch(dict(zip(names, frames)))
            return tuple(embedded[name] for name in names)

        return dict(zip(names, self._staged(("embed",), embed, [inputs[name] for name in names])))

    def _embed_torch(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self._embed_one(name, inputs[name]) for name in self.config.modality_names}

    def _embed_one(self, name: str, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, V, C, H, W] → patch tokens [B·V, 1 + P, D]."""
        backbone = self.model.backbones[name]
        x = frames.flatten(0, 1)
        # As a matmul on a GPU too: cuDNN's bf16 patch convolution is slow at batch 1, a plain GEMM is not
        return _embed_as_matmul(backbone, x) if _patch_embed_is_plain(backbone) else backbone.embed(x)

    def _head(self, final_tokens: dict[str, torch.Tensor], batch: int):
        """Backbones' final tokens {modality: [B·V, 1 + P, D]} → readouts (`LayerDropViT.readout`) → adapters →
        fusion → pooling → head."""
        names = self.config.modality_names
        return self._staged(("head",), lambda *tokens: self._head_torch(dict(zip(names, tokens)), batch),
                            [final_tokens[name] for name in names])

    def _head_torch(self, final_tokens: dict[str, torch.Tensor], batch: int):
        if self.fused_readout is not None:
            tokens = self.fused_readout(final_tokens, batch)
        else:
            tokens = torch.cat([self.model.adapters[spec.name](self.model.backbones[spec.name].readout(
                final_tokens[spec.name])).view(batch, len(spec.views), -1) for spec in self.config.modalities], dim=1)
        fused = _lean_encoder(self.model.fusion, tokens, self.fusion_manual_attention)
        return self.model.head(self.model.pooling(fused))

    def _staged(self, key: tuple, function: Callable, tensors: list[torch.Tensor]):
        """function(*tensors), through an ONNX Runtime session where one was faster for these shapes (CPU only)."""
        stage = self._stage_for(key, function, tensors)
        if stage is None:
            return function(*tensors)
        self.counters["onnx_runs"] += 1
        return stage(*tensors)

    def _stage_for(self, key: tuple, function: Callable, tensors: list[torch.Tensor]) -> OnnxStage | None:
        """The ONNX Runtime stage of `function` for these shapes (exported and timed on first use); None where
        PyTorch runs it (ONNX off, slower, or the export failed)."""
        if not self.onnx_stages:
            return None
        key = (*key, *(tuple(t.shape) for t in tensors))
        if key not in self._onnx:
            self._onnx[key] = self._new_onnx_stage(function, tensors, [self.model, *self.controllers.values()],
                                                   timed=self.onnx_policy == "timed")
            while len(self._onnx) > 4 * self.max_batch_sizes * (2 + self.front_threads + len(self.controllers)):
                self._onnx.popitem(last=False)
        self._onnx.move_to_end(key)
        return self._onnx[key]

    @staticmethod
    def _new_onnx_stage(function: Callable, tensors: list[torch.Tensor], modules, timed: bool) -> OnnxStage | None:
        try:
            stage = OnnxStage(function, tensors, modules)
        except Exception as error:  # an op the exporter or ORT lacks: PyTorch runs this stage, nothing is lost
            warnings.warn(f"ONNX export of a fast-path stage failed ({type(error).__name__}: {error}); "
                          "running it in PyTorch", RuntimeWarning, stacklevel=3)
            return None
        return stage if not timed or stage.faster_than(function, tensors) else None

    def _run_blocks(self, name: str, tokens: torch.Tensor, indices) -> torch.Tensor:
        blocks = self.blocks[name]
        for index in indices:
            tokens = blocks[index](tokens)
        self.counters["block_runs"] += len(indices)
        return tokens

    def _forward_lean(self, inputs, masks, embedded: dict[str, torch.Tensor] | None = None, first_block: int = 0):
        """embedded: tokens {modality: [B·V, 1 + P, D]} that already went through blocks < first_block (which must
        be on in every row); None → the patch embeddings of `inputs`."""
        batch = masks.shape[0]
        if embedded is None:
            embedded = self._embed(inputs)
        final_tokens = {}
        for index, spec in enumerate(self.config.modalities):
            tokens = embedded[spec.name]  # [B·V, 1 + P, D]
            views = len(spec.views)
            groups = _groups_from(masks[:, index], first_block)
            if len(groups) == 1:
                (active, _), = groups.items()
                final_tokens[spec.name] = self._run_blocks(spec.name, tokens, active)
                continue
            tokens = tokens.view(batch, views, *tokens.shape[1:])
            final = torch.empty_like(tokens)  # [B, V, 1 + P, D]
            for active, members in groups.items():
                rows = torch.tensor(members, device=tokens.device)
                final[rows] = self._run_blocks(spec.name, tokens[rows].flatten(0, 1), active).view(
                    len(members), views, *tokens.shape[2:])
            final_tokens[spec.name] = final.flatten(0, 1)
        return self._head(final_tokens, batch)

    # ----------------------------------------------------------------------------------------------------------
    # CUDA graphs.
    def _state_for(self, inputs: dict[str, torch.Tensor]) -> _BatchGraphs:
        batch = next(iter(inputs.values())).shape[0]
        state = self._graph_state.get(batch)
        if state is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            while len(self._graph_state) >= self.max_batch_sizes:  # least recently used batch size goes
                self._graph_state.popitem(last=False)
            state = self._graph_state[batch] = _BatchGraphs(self, inputs)
        self._graph_state.move_to_end(batch)
        return state

    def device_allocated(self) -> DeviceAllocatedForward | None:
        """The batch-1 slot forward, built on first use (its block table is a second copy of the blocks' weights),
        or None where the modalities' blocks differ in form."""
        if self._device_allocated is False:
            self._device_allocated = (DeviceAllocatedForward(self) if DeviceAllocatedForward.supported(self)
                                      else None)
        return self._device_allocated

    def _forward_graphs(self, inputs, masks):
        state = self._state_for(inputs)
        state.load(inputs)
        host_masks = None
        if state.batch == 1 and self.allocation_graphs_at_batch_1:
            host_masks = masks.cpu()
            entry = state.allocation_graph(host_masks, lambda: self._forward_lean(state.inputs, host_masks))
            if entry is not None:  # embeddings → this allocation's blocks → head, one replay
                graph, output = entry
                graph.replay()
                self.counters["graph_replays"] += 1
                self.counters["one_graph_replays"] += 1
                return _cloned(output)
        # Embeddings into the static token buffers, launched before the mask is read so they overlap the sync.
        graph, _ = state.graph(("embed",), state.embed_into_buffers)
        graph.replay()
        host_masks = masks.cpu() if host_masks is None else host_masks
        return self._blocks_and_head_graphs(state, host_masks, first_block=0, replays=1)

    def _select_and_forward_graphs(self, name, inputs, budget, costs):
        controller = self.controllers[name]
        state = self._state_for(inputs)
        state.load(inputs)
        if state.batch == 1 and self.slot_graph_at_batch_1 and self.device_allocated() is not None:
            graph, (mask, output) = state.graph(
                ("one graph", name, budget), lambda: self.device_allocated()(controller, state.inputs, budget, costs))
            graph.replay()  # controller → top-L → the chosen blocks → head; no host read in between
            self.counters["graph_replays"] += 1
            self.counters["one_graph_replays"] += 1
            return mask.clone(), _cloned(output)

        def select():
            return select_layers(self.controller_logits(controller, state.inputs).float(), budget, costs)

        if self.concurrent_controller:  # controller ∥ (embeddings → block 0s), one graph with two branches
            graph, mask = state.select_beside_embed_graph(name, budget, select)
            graph.replay()
            replays = 1
            self.counters["block_runs"] += len(self.config.modalities)
        else:
            graph, mask = state.select_graph(name, budget, select)
            graph.replay()
            graph, _ = state.graph(("embed",), state.embed_into_buffers)
            graph.replay()
            replays = 2
            for spec in self.config.modalities:  # block 0 is on for every row: queue it before the mask read
                replays += state.run_blocks(spec.name, state.tokens[spec.name], [0])
        host_masks = mask.cpu()  # the one host synchronisation
        return mask.clone(), self._blocks_and_head_graphs(state, host_masks, first_block=1, replays=replays)

    def _blocks_and_head_graphs(self, state: _BatchGraphs, host_masks: torch.Tensor, first_block: int, replays: int):
        """Host masks [B, M, depth] (B·M·depth booleans) decide which block graphs to replay from `first_block`."""
        for index, spec in enumerate(self.config.modalities):
            buffer = state.tokens[spec.name]
            groups = _groups_from(host_masks[:, index], first_block)
            if len(groups) == 1:
                (active, _), = groups.items()
                replays += state.run_blocks(spec.name, buffer, active)
                continue
            views = len(spec.views)
            for active, members in groups.items():
                rows = torch.tensor([m * views + v for m in members for v in range(views)], device=self.device)
                group_buffer = state.group_buffer(spec.name, len(rows))
                torch.index_select(buffer, 0, rows, out=group_buffer)
                replays += state.run_blocks(spec.name, group_buffer, active)
                buffer.index_copy_(0, rows, group_buffer)
        graph, output = state.graph(("head",), state.head_from_buffers)
        graph.replay()
        self.counters["graph_replays"] += replays + 1
        return _cloned(output)


def _cloned(output):
    """A graph's output lives in the shared pool, which the next replay may reuse: copy it out first."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    return type(output)(**{k: v.clone() for k, v in vars(output).items()})


def _groups_from(masks: torch.Tensor, first_block: int) -> dict[tuple[int, ...], list[int]]:
    """Rows grouped by identical mask [B, depth] → {active block indices ≥ first_block: rows}. Rows whose masks differ
    only below `first_block` share a group (those blocks already ran for every row)."""
    if first_block == 0:
        return group_rows_by_mask(masks)
    groups: dict[tuple[int, ...], list[int]] = {}
    for active, members in group_rows_by_mask(masks).items():
        groups.setdefault(tuple(i for i in active if i >= first_block), []).extend(members)
    return {active: sorted(members) for active, members in groups.items()}


class _BatchGraphs:
    """Static buffers and captured graphs for one batch size."""

    def __init__(self, fast: FastPath, inputs: dict[str, torch.Tensor]):
        self.fast = fast
        self.inputs = {name: torch.empty_like(x) for name, x in inputs.items()}
        self.batch = next(iter(inputs.values())).shape[0]
        with torch.inference_mode():
            embedded = fast._embed(inputs)
        self.tokens = {name: torch.empty_like(t) for name, t in embedded.items()}
        self.group_buffers: dict[tuple[str, int], torch.Tensor] = {}
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, object]] = {}
        self.allocation_graphs: OrderedDict[bytes, tuple[torch.cuda.CUDAGraph, object]] = OrderedDict()
        self.allocation_sightings: OrderedDict[bytes, int] = OrderedDict()

    def load(self, inputs: dict[str, torch.Tensor]) -> None:
        for name, static in self.inputs.items():
            if inputs[name].data_ptr() != static.data_ptr():
                static.copy_(inputs[name], non_blocking=True)

    def embed_into_buffers(self):
        for name, tokens in self.fast._embed(self.inputs).items():
            self.tokens[name].copy_(tokens)

    def head_from_buffers(self):
        return self.fast._head(self.tokens, self.batch)

    def group_buffer(self, name: str, rows: int) -> torch.Tensor:
        key = (name, rows)
        if key not in self.group_buffers:
            full = self.tokens[name]
            self.group_buffers[key] = full.new_empty(rows, *full.shape[1:])
        return self.group_buffers[key]

    def run_blocks(self, name: str, buffer: torch.Tensor, indices) -> int:
        block_list = self.fast.blocks[name]
        for index in indices:
            block = block_list[index]
            graph, _ = self.graph(("block", name, index, buffer.data_ptr(), buffer.shape[0]),
                                  lambda block=block: buffer.copy_(block(buffer)), restore=buffer)
            graph.replay()
        self.fast.counters["block_runs"] += len(indices)
        return len(indices)

    def select_graph(self, name: str, budget: int, select: Callable[[], torch.Tensor]):
        """(graph, static mask [B, M, depth]): the mask lives outside the graphs' shared pool. A graph's own output
        would sit in pool memory that graphs captured earlier use as scratch, and here the embedding and block-0
        graphs replay before the mask is read, which would overwrite the masks of every controller captured after
        the first)."""
        key = ("select", name, budget)
        if key not in self.graphs:
            static = self._mask_buffer()
            self.graphs[key] = (self._capture(lambda: static.copy_(select()))[0], static)
        return self.graphs[key]

    def _mask_buffer(self) -> torch.Tensor:
        """A bool mask [B, M, depth] allocated outside the graphs' pool (see `select_graph`)."""
        config = self.fast.config
        return torch.empty(self.batch, len(config.modalities), config.blocks_per_backbone, dtype=torch.bool,
                           device=self.fast.device)

    def allocation_graph(self, host_masks: torch.Tensor, function: Callable[[], object]):
        """(graph, output) for an allocation seen ALLOCATION_GRAPH_AFTER times, else None (per-block graphs serve it).
        A node serving Upper Bound, Naive or any fixed allocation replays one graph per frame; allocations that
        change every frame (the universal controller) never pay a capture. The MAX_ALLOCATION_GRAPHS most recently
        used graphs are kept."""
        key = host_masks.numpy().tobytes()
        entry = self.allocation_graphs.get(key)
        if entry is None:
            seen = self.allocation_sightings[key] = self.allocation_sightings.get(key, 0) + 1
            self.allocation_sightings.move_to_end(key)
            while len(self.allocation_sightings) > 4 * MAX_ALLOCATION_GRAPHS:
                self.allocation_sightings.popitem(last=False)
            if seen < ALLOCATION_GRAPH_AFTER:
                return None
            while len(self.allocation_graphs) >= MAX_ALLOCATION_GRAPHS:
                self.allocation_graphs.popitem(last=False)
            entry = self.allocation_graphs[key] = self._capture(function)
        self.allocation_graphs.move_to_end(key)
        return entry

    def select_beside_embed_graph(self, name: str, budget: int, select: Callable[[], torch.Tensor]):
        """(graph, static mask [B, M, depth]): the selection on a side stream, the patch embeddings into the token
        buffers and every modality's block 0 (on for every row) on the capturing stream; both branches join before
        the graph ends. The mask lives outside the graphs' pool (see `select_graph`)."""
        key = ("select beside embed", name, budget)
        if key not in self.graphs:
            fast = self.fast
            static = self._mask_buffer()
            side = torch.cuda.Stream(fast.device)

            def function():
                main = torch.cuda.current_stream(fast.device)
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    static.copy_(select())
                self.embed_into_buffers()  # rewrites the buffers, so the warm-up run leaves nothing behind
                for spec in fast.config.modalities:
                    buffer = self.tokens[spec.name]
                    buffer.copy_(fast.blocks[spec.name][0](buffer))
                main.wait_stream(side)

            self.graphs[key] = (self._capture(function)[0], static)
        return self.graphs[key]

    def graph(self, key: tuple, function: Callable[[], object], restore: torch.Tensor | None = None):
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(function, restore)
        return entry

    def _capture(self, function: Callable[[], object], restore: torch.Tensor | None = None):
        """Warm up on a side stream, then capture `function` into a graph sharing the path's memory pool.
        Everything that outlives a replay lives in buffers allocated outside the graphs, so sharing is safe
        (graphs replay one at a time on one stream)."""
        stream = torch.cuda.Stream(self.fast.device)
        stream.wait_stream(torch.cuda.current_stream(self.fast.device))
        saved = None if restore is None else restore.clone()  # the warm-up must not apply an in-place block twice
        with torch.cuda.stream(stream), torch.inference_mode():
            function()
            if saved is not None:
                restore.copy_(saved)
        torch.cuda.current_stream(self.fast.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self.fast._pool):
            output = function()
        self.fast.counters["graph_captures"] += 1
        return graph, output
