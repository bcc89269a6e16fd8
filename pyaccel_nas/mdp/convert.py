"""A user's CNN as an MDP network: its graph traced with torch.fx and matched, block by block, to MDP's blocks.

    config, state = config_from_module(torchvision.models.resnet18(num_classes=10), input_size=(32, 32))
    net = load_plain_weights(MDPNet(over_parameterise(config)), state)    # K branches + gates per block

The traced graph must be a chain of

- ``conv``: Conv-BatchNorm-ReLU (or ReLU6), the conv with an odd kernel, padding k // 2, no dilation;
- ``maxpool``: a max pool (any window, stride and padding, no dilation or ceil mode);
- ``residual`` (ResNet's BasicBlock): 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the input or a 1x1 conv-BN of it,
  then ReLU;
- ``bottleneck`` (ResNet-50's Bottleneck, the stride on the 3x3 conv): 1x1, 3x3, 1x1 conv-BN (ReLU after the
  first two), plus the input or a 1x1 conv-BN of it, then ReLU;
- ``inverted_residual`` (MobileNetV2's InvertedResidual): [1x1 conv-BN-ReLU6], depthwise conv-BN-ReLU6,
  1x1 conv-BN, plus the input or not;

ending in global average pooling, flatten, [dropout], linear. A conv's bias is folded into its BatchNorm.
Anything else raises a ValueError naming the first layer (module or function) that does not fit, and why.
:func:`torchvision_model` builds the torchvision networks ``prune --model`` offers.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from pyaccel_nas.mdp.arch import ArchConfig, Block, block_input_sizes
from pyaccel_nas.mdp.layers import MDPNet

_CONVS = {2: nn.Conv2d, 3: nn.Conv3d}
_NORMS = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOLS = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GLOBAL_POOLS = {2: (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d), 3: (nn.AdaptiveAvgPool3d, F.adaptive_avg_pool3d)}
_ADDS = (operator.add, operator.iadd, torch.add)
_RELU_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}

TORCHVISION_MODELS = ("resnet18", "resnet50", "mobilenet_v2")


class ConversionError(ValueError):
    """The model does not fit MDP's blocks; the message names the first layer that does not, and why."""


@dataclass
class _Unit:
    """A conv, its BatchNorm and its activation (None: none) as they appear in the traced graph."""

    conv: nn.Conv2d | nn.Conv3d
    norm: nn.BatchNorm2d | nn.BatchNorm3d
    activation: str | None
    last: torch.fx.Node  # the node giving the unit's output

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.conv.kernel_size)

    @property
    def depthwise(self) -> bool:
        return self.conv.groups > 1

    def is_pointwise(self) -> bool:
        return max(self.kernel) == 1 and max(self.conv.stride) == 1 and not self.depthwise


def _describe(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"layer {node.target!r} ({type(modules[node.target]).__name__})"
    if node.op in ("call_function", "call_method"):
        return f"{node.op.replace('_', ' ')} {getattr(node.target, '__name__', node.target)!s} ({node.name})"
    return f"{node.op} {node.name}"


class _Matcher:
    """Walks the traced graph from its input, turning runs of nodes into MDP blocks."""

    def __init__(self, model: nn.Module, dims: int) -> None:
        try:
            self.graph = torch.fx.symbolic_trace(model).graph
        except Exception as exc:  # fx raises many kinds for code it cannot trace
            raise ConversionError(f"MDP cannot trace the model with torch.fx: {exc}") from exc
        self.modules = dict(model.named_modules())
        self.dims = dims
        self.blocks: list[Block] = []
        self.in_channels: int | None = None  # of the first conv: the model's input channels
        self.sources: list[dict[str, _Unit]] = []  # per prunable block: its units by MDP unit name

    def fail(self, node: torch.fx.Node, why: str) -> ConversionError:
        return ConversionError(f"MDP cannot handle {_describe(node, self.modules)}: {why}")

    def module(self, node: torch.fx.Node, kinds) -> nn.Module | None:
        if node.op == "call_module" and isinstance(self.modules[node.target], kinds):
            return self.modules[node.target]
        return None

    def only_user(self, node: torch.fx.Node) -> torch.fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def activation(self, node: torch.fx.Node | None) -> str | None:
        if node is None:
            return None
        if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
            return _RELU_FUNCTIONS[node.target]
        if self.module(node, nn.ReLU6) is not None:
            return "relu6"
        if self.module(node, nn.ReLU) is not None:
            return "relu"
        if node.op == "call_method" and node.target in ("relu", "relu_"):
            return "relu"
        return None

    def unit(self, node: torch.fx.Node) -> _Unit:
        """The conv at ``node``, its BatchNorm and (if its single user) its activation."""
        conv = self.module(node, _CONVS[self.dims])
        if conv is None:
            raise self.fail(node, f"expected a {_CONVS[self.dims].__name__} here")
        self.in_channels = self.in_channels or conv.in_channels
        kernel, padding = conv.kernel_size, conv.padding
        if (conv.padding_mode != "zeros" or isinstance(padding, str) or any(d != 1 for d in conv.dilation)
                or any(k % 2 == 0 or p != k // 2 for k, p in zip(kernel, padding))):
            raise self.fail(node, "only convs with odd kernels, padding k // 2, no dilation")
        if conv.groups != 1 and not conv.groups == conv.in_channels == conv.out_channels:
            raise self.fail(node, "only dense (groups=1) or depthwise (groups = in = out channels) convs")
        norm_node = self.only_user(node)
        norm = None if norm_node is None else self.module(norm_node, _NORMS[self.dims])
        if norm is None or not norm.affine or not norm.track_running_stats or norm.num_features != conv.out_channels:
            raise self.fail(node, "a conv must be followed by an affine BatchNorm with running statistics (the "
                                  "channel gates act on its output), and by nothing else")
        after = self.only_user(norm_node)
        activation = self.activation(after)
        return _Unit(conv, norm, activation, after if activation else norm_node)

    def run(self, node: torch.fx.Node, stop: torch.fx.Node | None = None) -> list[_Unit]:
        """The units in series from ``node``: up to ``stop`` (exclusive), else while each has one conv after it."""
        units = []
        while node is not stop:
            units.append(self.unit(node))
            following = self.only_user(units[-1].last)
            if stop is None and (following is None or self.module(following, _CONVS[self.dims]) is None
                                 or units[-1].activation is None):
                break
            if following is None:
                raise self.fail(units[-1].last, "its output is used by several layers inside a block")
            node = following
        return units


    def residual(self, node: torch.fx.Node) -> torch.fx.Node:
        """The residual block whose input is ``node`` (used twice); the node after it."""
        users = list(node.users)
        if len(users) != 2:
            raise self.fail(node, f"its output is used by {len(users)} layers (a residual block's input feeds two)")
        # the sum is the first add node that both paths reach: find it by following single users from each
        ends = []
        for start in users:
            probe = start
            while not (probe.op == "call_function" and probe.target in _ADDS):
                probe = self.only_user(probe)
                if probe is None:
                    raise self.fail(start, "a path from a residual block's input does not reach the sum alone")
            ends.append(probe)
        if ends[0] is not ends[1]:
            raise self.fail(ends[0], "the two paths from a residual block's input reach different sums")
        total = ends[0]
        if len(total.args) != 2 or total.kwargs:
            raise self.fail(total, "a residual sum adds exactly the two paths")
        paths = sorted((self.run(start, total) for start in users), key=len)
        shortcut, main = paths
        if len(shortcut) > 1 or shortcut and (shortcut[0].activation or max(shortcut[0].kernel) != 1
                                              or shortcut[0].depthwise):
            raise self.fail(users[0], "a shortcut must be the identity or a 1x1 conv and BatchNorm")
        after = self.only_user(total)
        relu_after = self.activation(after)
        kinds = [(max(u.kernel), u.depthwise, u.activation) for u in main]
        stride = tuple(next((u.conv.stride for u in main if max(u.conv.stride) > 1), (1,) * self.dims))
        projection = bool(shortcut)
        if shortcut and tuple(shortcut[0].conv.stride) != stride:
            raise self.fail(total, "the shortcut's stride differs from the block's")
        if relu_after == "relu" and kinds == [(3, False, "relu"), (3, False, None)] and main[0].kernel == (3,) * self.dims:
            if max(main[1].conv.stride) != 1:
                raise self.fail(total, "a basic block's second conv must have stride 1")
            block = Block("residual", out=main[1].conv.out_channels, mid=main[0].conv.out_channels, stride=stride,
                          projection=projection, factors=((1,) * self.dims,))
            units = {"mid": main[0], "out": main[1]}
        elif relu_after == "relu" and kinds == [(1, False, "relu"), (3, False, "relu"), (1, False, None)]:
            if max(main[0].conv.stride) != 1 or max(main[2].conv.stride) != 1:
                raise self.fail(total, "a bottleneck must have its stride on the 3x3 conv (ResNet v1.5)")
            block = Block("bottleneck", out=main[2].conv.out_channels, mid=main[0].conv.out_channels,
                          mid2=main[1].conv.out_channels, stride=stride, projection=projection,
                          factors=((1,) * self.dims,))
            units = {"mid": main[0], "mid2": main[1], "out": main[2]}
        elif relu_after is None and not projection and self._inverted(main):
            block, units = self._inverted_block(main, shortcut=True)
            after = total
        else:
            raise self.fail(total, "a residual block must be a basic block or bottleneck (then ReLU) or an "
                                   "inverted residual (no activation after the sum), with ReLU / ReLU6 as those use")
        if projection:
            units["proj"] = shortcut[0]
        self.blocks.append(block)
        self.sources.append(units)
        return after if relu_after else total

    @staticmethod
    def _inverted(units: list[_Unit]) -> bool:
        """Whether ``units`` are [1x1-ReLU6] depthwise-ReLU6 1x1 (no activation)."""
        if not 2 <= len(units) <= 3:
            return False
        *expand, depthwise, project = units
        return (all and all(u.is_pointwise() and u.activation == "relu6" for u in expand)
                and depthwise.depthwise and depthwise.activation == "relu6"
                and project.is_pointwise() and project.activation is None)

    def _inverted_block(self, units: list[_Unit], shortcut: bool) -> tuple[Block, dict[str, _Unit]]:
        *expand, depthwise, project = units
        block = Block("inverted_residual", out=project.conv.out_channels, mid=depthwise.conv.out_channels,
                      kernel=depthwise.kernel, stride=tuple(depthwise.conv.stride), expand=bool(expand),
                      shortcut=shortcut, factors=((1,) * self.dims,))
        named = {"depthwise": depthwise, "out": project}
        if expand:
            named["mid"] = expand[0]
        return block, named

    def chain(self, node: torch.fx.Node) -> torch.fx.Node:
        """Conv blocks in series from ``node``, ending in an inverted residual if the last has no activation."""
        units = self.run(node)
        tail = []
        if units[-1].activation is None:
            take = 3 if len(units) >= 3 and self._inverted(units[-3:]) else 2
            tail = units[-take:]
            if not self._inverted(tail):
                last = units[-1].last
                raise self.fail(self.only_user(last) or last, "expected ReLU or ReLU6 after a conv and its "
                                                              "BatchNorm (or the end of an inverted residual)")
            units = units[:-take]
        for unit in units:
            if unit.depthwise:
                raise self.fail(node, "a depthwise conv only inside an inverted residual")
            self.blocks.append(Block("conv", out=unit.conv.out_channels, kernel=unit.kernel,
                                     stride=tuple(unit.conv.stride), activation=unit.activation,
                                     factors=((1,) * self.dims,)))
            self.sources.append({"out": unit})
        if tail:
            block, named = self._inverted_block(tail, shortcut=False)
            self.blocks.append(block)
            self.sources.append(named)
        return (tail or units)[-1].last

    def maxpool(self, node: torch.fx.Node) -> None:
        pool = self.module(node, _MAXPOOLS[self.dims])
        def per_dim(value):
            return tuple(value) if isinstance(value, (tuple, list)) else (value,) * self.dims
        dilation = per_dim(pool.dilation)
        if pool.ceil_mode or max(dilation) != 1 or pool.return_indices:
            raise self.fail(node, "only max pools without ceil mode, dilation or indices")
        self.blocks.append(Block("maxpool", kernel=per_dim(pool.kernel_size),
                                 stride=per_dim(pool.stride or pool.kernel_size), padding=per_dim(pool.padding)))

    def head(self, node: torch.fx.Node) -> tuple[nn.Linear, float]:
        """Global average pooling (at ``node``), flatten, [dropout], linear, output: the classifier and the
        dropout probability."""
        module_kind, function = _GLOBAL_POOLS[self.dims]
        pool = self.module(node, module_kind)
        size = pool.output_size if pool is not None else (node.args[1] if len(node.args) > 1 else
                                                           node.kwargs.get("output_size"))
        if size not in (1, (1,) * self.dims, [1] * self.dims) or (pool is None and node.target is not function):
            raise self.fail(node, "the convolutions must end in global average pooling to size 1")
        if not any(block.prunable for block in self.blocks):
            raise self.fail(node, "the model has no convolution before it")
        flatten = self.only_user(node)
        module = None if flatten is None else self.module(flatten, nn.Flatten)
        if flatten is None or not (module is not None and module.start_dim == 1 and module.end_dim == -1
                                   or (flatten.op, flatten.target) in (("call_function", torch.flatten),
                                                                       ("call_method", "flatten"))
                                   and (flatten.args[1:] == (1,) or flatten.kwargs == {"start_dim": 1})):
            raise self.fail(flatten or node, "global average pooling must be followed by flatten(x, 1)")
        following = self.only_user(flatten)
        dropout = 0.0
        if following is not None and self.module(following, nn.Dropout) is not None:
            dropout = self.modules[following.target].p
            following = self.only_user(following)
        classifier = None if following is None else self.module(following, nn.Linear)
        if classifier is None:
            raise self.fail(following or flatten, "expected [dropout then] a linear classifier after flatten")
        features = [b.out for b in self.blocks if b.prunable][-1]
        if classifier.in_features != features:
            raise self.fail(following, f"takes {classifier.in_features} features, the convolutions give {features}")
        output = self.only_user(following)
        if output is None or output.op != "output":
            raise self.fail(output or following, "the linear classifier must give the model's output")
        return classifier, dropout

    def walk(self) -> tuple[nn.Linear, float]:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ConversionError(f"MDP converts models of one input, this one takes {len(placeholders)}")
        node = placeholders[0]
        while True:
            users = list(node.users)
            if len(users) > 1:
                node = self.residual(node)
                continue
            if not users:
                raise self.fail(node, "its output is not used")
            (next_node,) = users
            if self.module(next_node, _CONVS[self.dims]) is not None:
                node = self.chain(next_node)
            elif self.module(next_node, _MAXPOOLS[self.dims]) is not None:
                self.maxpool(next_node)
                node = next_node
            elif self.module(next_node, _GLOBAL_POOLS[self.dims][0]) is not None or (
                    next_node.op == "call_function" and next_node.target is _GLOBAL_POOLS[self.dims][1]):
                return self.head(next_node)
            else:
                raise self.fail(next_node, "expected a conv, a max pool, a residual block or global average "
                                           "pooling here")


def config_from_module(model: nn.Module, input_size: Sequence[int], name: str = "user"
                       ) -> tuple[ArchConfig, dict[str, torch.Tensor]]:
    """The plain MDP config of a user's CNN (2-D for an (H, W) ``input_size``, 3-D for (T, H, W)) and its
    weights as an :class:`MDPNet` state_dict: the MDPNet computes what ``model`` computes, in eval mode.
    A ConversionError (a ValueError) names the first layer of the model that MDP's blocks cannot express."""
    dims = len(input_size)
    if dims not in (2, 3):
        raise ValueError(f"config_from_module: `input_size` must be (H, W) or (T, H, W), got {tuple(input_size)}")
    matcher = _Matcher(model, dims)
    classifier, dropout = matcher.walk()
    config = ArchConfig(name, matcher.in_channels, classifier.out_features, tuple(input_size), tuple(matcher.blocks),
                        dropout)
    try:
        block_input_sizes(config)
    except ValueError as exc:
        raise ConversionError(f"MDP cannot run the model at input size {tuple(input_size)}: {exc}") from exc
    with torch.device("meta"):  # only its module names are needed
        net = MDPNet(config)
    names = {module: key for key, module in net.named_modules()}
    state: dict[str, torch.Tensor] = {}
    for (_, block), sources in zip(net.prunable_blocks(), matcher.sources, strict=True):
        for unit in block.channel_layout().units:
            source = sources[unit.name]
            state[names[unit.conv] + ".weight"] = source.conv.weight.detach().clone()
            norm = source.norm if source.conv.bias is None else _absorb_bias(source.norm, source.conv.bias.detach())
            state.update({f"{names[unit.batchnorm(0)]}.{k}": v.detach().clone() for k, v in norm.state_dict().items()})
    state["classifier.weight"] = classifier.weight.detach().clone()
    state["classifier.bias"] = (classifier.bias.detach().clone() if classifier.bias is not None
                                else torch.zeros(classifier.out_features))
    return config, state


def _absorb_bias(norm: nn.Module, bias: torch.Tensor) -> nn.Module:
    """BN(conv(x) + b) == BN'(conv(x)) in eval mode with BN' = BN whose running mean is shifted by -b."""
    shifted = type(norm)(norm.num_features)
    shifted.load_state_dict(norm.state_dict())
    with torch.no_grad():
        shifted.running_mean -= bias
    return shifted


def import_torchvision():
    """The torchvision module; ImportError saying how to install it.

    PyPI's torchvision wheels are built against CUDA torch: beside a CPU-only torch their compiled ops
    cannot load, and torchvision 0.28 then fails on import, registering fake kernels for two of those ops
    (nms, qnms). Its models are pure Python, so where that happens the two ops' schemas are declared
    (nothing more: calling them still fails) and the import is tried again.
    """
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError("these models need torchvision (pip install torchvision, the version made for your "
                          "torch)") from exc
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        library = torch.library.Library("torchvision", "DEF")  # noqa: the schemas live as long as the process
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP_ALIVE.append(library)
        import torchvision
    return torchvision


_KEEP_ALIVE: list = []  # a torch.library.Library unregisters its definitions when collected


def torchvision_model(name: str, num_classes: int) -> nn.Module:
    """torchvision's ``name`` (one of :data:`TORCHVISION_MODELS`), untrained, for ``num_classes`` classes."""
    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision model {name!r}; known: {', '.join(TORCHVISION_MODELS)}")
    return getattr(import_torchvision().models, name)(weights=None, num_classes=num_classes)
