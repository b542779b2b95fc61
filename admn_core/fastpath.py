"""Fast inference path: the same weights and the same allocation semantics as the eager model, less overhead.

Eager (`ADMNModel.forward`) stays the reference; this path must match it within floating-point tolerance
(test/test_fastpath.py). It is one of two forms, chosen by the model's device, configured by `FastPathOptions`:

* GPU (any CUDA device): CUDA graphs, captured lazily and replayed for any allocation:
  - one graph per (controller, budget, batch size) for `select`: controller → top-L, writing the mask on the device;
  - for `select_and_forward`, one graph with two branches: the controller → top-L on a second stream beside the
    patch embeddings and every block 0 (on for every row whatever the controller picks, `select_layers`);
  - one graph per batch size for the patch embeddings alone (`forward` with given masks);
  - one graph per (modality, block, rows): each runs the block on a static token buffer in place, so any
    allocation is a sequence of block replays and only active blocks ever run;
  - one graph per batch size for final norms → adapters → fusion → head.
  The single host synchronisation is the [B, M, depth] mask read (B·M·depth booleans) that decides which block
  graphs to replay. Eager GPU issues ~20 kernels per block from Python; a replay issues one launch. Any dtype the
  engine was built with (bf16 / fp16 weights) is used as is.
* CPU: a lean functional forward with the same weights (fewer module calls per block). In float32 with
  onnxruntime installed (`FastPathOptions.onnx`), the stages that run whatever the budget — controller + patch
  embeddings + every block 0 as the "front", and readouts → fusion → head — run as ONNX Runtime sessions
  (`admn_core.onnx_cpu`); the front is split into `front_threads` stages run at once (the controller beside the
  embeddings and block 0s). Otherwise the same stage functions run in PyTorch.
* Both: the controller's per-modality conv stems, and every backbone's readout + fusion adapter, run as one call
  for all modalities where their shapes agree (`admn_core.fused`).

Allocation-grouped batching is inherited: rows are grouped by identical mask per modality, and each group runs
only its own blocks (on the GPU through the block graphs of that group's row count).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from admn_core.allocation import select_layers
from admn_core.fused import FusedReadoutAdapters, FusedStems
from admn_core.models.backbone import LayerDropViT, group_rows_by_mask
from admn_core.models.controller import QoIController
from admn_core.models.fusion import TransformerEncoder
from admn_core.models.task_model import ADMNModel
from admn_core.onnx_cpu import OnnxStage, onnx_runtime_available

MAX_BATCH_SIZES = 4  # GPU: batch sizes whose graphs are kept (the least recently used goes first)
ONNX_ENVIRONMENT = "ADMN_FASTPATH_ONNX"


def _onnx_default() -> bool:
    return os.environ.get(ONNX_ENVIRONMENT, "1") != "0"


@dataclasses.dataclass(frozen=True)
class FastPathOptions:
    """How the fast path runs. The defaults are fixed, chosen by measurement (docs/performance.md, "Inference
    paths"); nothing is timed at start-up.

    onnx: on a CPU in float32, run the stages that run whatever the budget on ONNX Runtime (where onnxruntime is
      installed); False keeps every stage in PyTorch (no export at start-up). Default on, unless the environment
      sets ADMN_FASTPATH_ONNX=0 — the one environment override, for processes configured only through it (nodes
      started by a launch file or a test).
    front_threads: with ONNX stages, the front split into this many stages run at once, one per thread; None →
      PyTorch's thread count. 1 runs the front as one stage.
    """

    onnx: bool = dataclasses.field(default_factory=_onnx_default)
    front_threads: int | None = None

    def __post_init__(self):
        if self.front_threads is not None and self.front_threads < 1:
            raise ValueError(f"front_threads must be at least 1, got {self.front_threads}")


def _manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention written out: on a CPU faster than the fused kernel for the encoders' handful of tokens."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    return torch.softmax(scores, dim=-1).matmul(v)


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
        # The parameters, looked up once (a module attribute lookup per call costs more than some of these ops).
        self.norm1 = (block.norm1.weight, block.norm1.bias, block.norm1.eps)
        self.norm2 = (block.norm2.weight, block.norm2.bias, block.norm2.eps)
        self.qkv = (attn.qkv.weight, attn.qkv.bias)
        self.proj = (attn.proj.weight, attn.proj.bias)
        self.fc1 = (mlp.fc1.weight, mlp.fc1.bias)
        self.fc2 = (mlp.fc2.weight, mlp.fc2.bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, D] → [N, T, D] (timm `Block` at inference)."""
        if not self.supported:
            return self.block(x)
        batch, tokens, width = x.shape
        h = F.layer_norm(x, (width,), *self.norm1)
        qkv = F.linear(h, *self.qkv).view(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [N, heads, T, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + F.linear(attended.transpose(1, 2).reshape(batch, tokens, -1), *self.proj)
        h = F.layer_norm(x, (width,), *self.norm2)
        return x + F.linear(F.gelu(F.linear(h, *self.fc1)), *self.fc2)


def lean_encoder(encoder: TransformerEncoder, tokens: torch.Tensor, manual_attention: bool) -> torch.Tensor:
    """The fusion / controller encoder (pre-norm, qkv without bias) with functional ops: [B, T, dim] → [B, T, dim]."""
    x = tokens + encoder.positions(tokens)
    batch, count, _ = x.shape
    for attention, feed_forward in encoder.layers:
        norm = attention.norm
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        qkv = F.linear(h, attention.to_qkv.weight).view(batch, count, 3, attention.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attended = _manual_attention(q, k, v) if manual_attention else F.scaled_dot_product_attention(q, k, v)
        x = x + F.linear(attended.transpose(1, 2).reshape(batch, count, -1), attention.to_out.weight,
                         attention.to_out.bias)
        norm, hidden, out = feed_forward.norm, feed_forward.hidden, feed_forward.out
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        x = x + F.linear(F.gelu(F.linear(h, hidden.weight, hidden.bias)), out.weight, out.bias)
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
    `forward(inputs, masks)` → the head's output, equal to `model(inputs, masks)` within tolerance;
    `select_and_forward(name, inputs, budget, costs)` → both, with the controller overlapped where it can be.
    CUDA graphs exactly when the model is on a CUDA device, the lean forward otherwise.
    """

    def __init__(self, model: ADMNModel, controllers: dict[str, QoIController] | None = None,
                 options: FastPathOptions | None = None):
        self.model = model
        self.controllers = dict(controllers or {})
        self.config = model.config
        self.device = model.head_device
        self.options = options if options is not None else FastPathOptions()
        self.graphs = self.device.type == "cuda"
        self.blocks = {spec.name: [_LeanBlock(b) for b in model.backbones[spec.name].blocks]
                       for spec in self.config.modalities}
        # The encoders (fusion, controller) see a handful of tokens: on a CPU explicit attention beats the fused
        # kernel there; a GPU keeps the fused kernel.
        self.manual_encoder_attention = self.device.type == "cpu"
        # Per-modality small layers run once for all modalities where their shapes agree (admn_core.fused).
        self.fused_stems = {id(c): FusedStems(self.config, c) for c in self.controllers.values()
                            if FusedStems.supported(self.config, c)}
        self.fused_readout = FusedReadoutAdapters(model) if FusedReadoutAdapters.supported(model) else None
        self.front_threads = self.options.front_threads or torch.get_num_threads()
        self._front_pool: ThreadPoolExecutor | None = None
        self.onnx_stages = (self.options.onnx and self.device.type == "cpu" and onnx_runtime_available()
                            and next(model.parameters()).dtype == torch.float32)
        self._onnx: OrderedDict[tuple, OnnxStage | None] = OrderedDict()  # None: the export failed, PyTorch runs it
        self._graph_state: OrderedDict[int, _BatchGraphs] = OrderedDict()
        self._pool = None
        self.counters = {"block_runs": 0, "graph_captures": 0, "graph_replays": 0, "onnx_runs": 0,
                         "parallel_fronts": 0}

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
        tokens = self._stem_tokens(controller, inputs)
        tokens = torch.cat([controller.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        e_corr = lean_encoder(controller.encoder, tokens, self.manual_encoder_attention)[:, 0]
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
        anyway; the controller runs beside them on a second stream. A CPU runs the controller with them in the front
        stages (`_front`), split over threads only as ONNX Runtime stages, which release the GIL: beside PyTorch ops
        on a second Python thread it gained ≤ 6 % at the tiny preset's batch 1 on 2 cores."""
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
        the controller are shared by every controller. A group whose stage stays in PyTorch (ONNX off or a failed
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
        fused = lean_encoder(self.model.fusion, tokens, self.manual_encoder_attention)
        return self.model.head(self.model.pooling(fused))

    def _staged(self, key: tuple, function: Callable, tensors: list[torch.Tensor]):
        """function(*tensors), through its ONNX Runtime stage for these shapes where there is one (CPU only)."""
        stage = self._stage_for(key, function, tensors)
        if stage is None:
            return function(*tensors)
        self.counters["onnx_runs"] += 1
        return stage(*tensors)

    def _stage_for(self, key: tuple, function: Callable, tensors: list[torch.Tensor]) -> OnnxStage | None:
        """The ONNX Runtime stage of `function` for these shapes (exported on first use); None where PyTorch runs it
        (ONNX off, or the export failed)."""
        if not self.onnx_stages:
            return None
        key = (*key, *(tuple(t.shape) for t in tensors))
        if key not in self._onnx:
            self._onnx[key] = self._new_onnx_stage(function, tensors, [self.model, *self.controllers.values()])
            while len(self._onnx) > 4 * MAX_BATCH_SIZES * (2 + self.front_threads + len(self.controllers)):
                self._onnx.popitem(last=False)
        self._onnx.move_to_end(key)
        return self._onnx[key]

    @staticmethod
    def _new_onnx_stage(function: Callable, tensors: list[torch.Tensor], modules) -> OnnxStage | None:
        try:
            return OnnxStage(function, tensors, modules)
        except Exception as error:  # an op the exporter or ORT lacks: PyTorch runs this stage, nothing is lost
            warnings.warn(f"ONNX export of a fast-path stage failed ({type(error).__name__}: {error}); "
                          "running it in PyTorch", RuntimeWarning, stacklevel=3)
            return None

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
            while len(self._graph_state) >= MAX_BATCH_SIZES:  # least recently used batch size goes
                self._graph_state.popitem(last=False)
            state = self._graph_state[batch] = _BatchGraphs(self, inputs)
        self._graph_state.move_to_end(batch)
        return state

    def _forward_graphs(self, inputs, masks):
        state = self._state_for(inputs)
        state.load(inputs)
        # Embeddings into the static token buffers, launched before the mask is read so they overlap the sync.
        graph, _ = state.graph(("embed",), state.embed_into_buffers)
        graph.replay()
        return self._blocks_and_head_graphs(state, masks.cpu(), first_block=0, replays=1)

    def _select_and_forward_graphs(self, name, inputs, budget, costs):
        controller = self.controllers[name]
        state = self._state_for(inputs)
        state.load(inputs)

        def select():
            return select_layers(self.controller_logits(controller, state.inputs).float(), budget, costs)

        graph, mask = state.select_beside_embed_graph(name, budget, select)  # controller ∥ (embeddings → block 0s)
        graph.replay()
        self.counters["block_runs"] += len(self.config.modalities)
        host_masks = mask.cpu()  # the one host synchronisation
        return mask.clone(), self._blocks_and_head_graphs(state, host_masks, first_block=1, replays=1)

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
        """(graph, static mask [B, M, depth]) for `FastPath.select`: the mask lives outside the graphs' shared pool.
        A graph's own output would sit in pool memory that graphs captured earlier use as scratch, so a replay of
        another graph before the mask is read (the embeddings, the block 0s) would overwrite it."""
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
