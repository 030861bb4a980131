"""Count, on the CPU, the host synchronisations and device-to-host transfers a run would make
on a GPU.

On a GPU every read of device memory by the host is a copy the host waits for: ``.cpu()``,
``.to("cpu")``, ``.tolist()``, ``.numpy()`` (after one of those), and the scalar reads
``.item()``, ``int(t)``, ``float(t)``, ``bool(t)`` (``if t.any():``), which all go through
``aten::_local_scalar_dense``. Operators whose output shape depends on the values
(``nonzero``, boolean-mask indexing, ``unique``, ...) wait for the device too. On the CPU none
of this costs anything, and ``t.cpu()`` returns ``t`` itself without dispatching any
operator, so a profiler counts nothing: counting ``aten::_to_copy`` on the CPU would say
that ``.cpu()`` is free.

:class:`DeviceTraffic` emulates the device boundary instead. It marks the model's parameters
and buffers as device-resident and, as a ``TorchDispatchMode``, marks every tensor an operator
computes from a marked tensor (the forward pass, hooks, and the backward pass alike, which
runs in the calling thread on the CPU). Then, for marked tensors only:

- ``.cpu()``, ``.to("cpu")``, ``.tolist()``, ``copy_`` into an unmarked tensor and
  every scalar read count as one **transfer**; ``.cpu()`` and ``.to()`` return an unmarked copy,
  as they do on a GPU, so a later ``.numpy()`` of that copy is free;
- every transfer is also a **sync** (a copy into pageable host memory is synchronous), and so
  is every data-dependent-shape operator;
- ``.numpy()`` of a marked tensor is counted in ``numpy_on_device``: on a GPU it raises.

What it cannot tell on a CPU run: a tensor created from nothing on the device
(``torch.empty(n, device=d)``) and the uploaded input (``x.to(device)``) look like host
tensors, so they are not marked (xviz makes its device buffers with ``like.new_empty``, which
is); a ``copy_`` into such a tensor is counted as a transfer (too many, never too few). And
``.to(device)`` with a ``torch.device`` object is not counted (see ``counted_to``). Only
downloads are counted; uploads are not.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

# Operators that hand a tensor's value to Python. Which one the mode sees depends on the
# grad mode: under inference_mode the composite ``item``/``is_nonzero`` arrive undecomposed.
SCALAR_READS = {"aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal"}
# Operators whose output size depends on tensor values: the host waits to learn it.
DATA_DEPENDENT = {
    "aten.nonzero",
    "aten.masked_select",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.repeat_interleave",
}


class DeviceTraffic(TorchDispatchMode):
    """``with DeviceTraffic(model) as traffic: run(...)``; then ``traffic.transfers``,
    ``traffic.syncs``, ``traffic.numpy_on_device`` and ``traffic.where`` (counts by kind)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._marked = WeakIdKeyDictionary()
        for tensor in (*model.parameters(), *model.buffers()):
            self._marked[tensor] = True
        self.transfers = 0
        self.syncs = 0
        self.numpy_on_device = 0
        self.transferred_bytes = 0
        self.where: Counter[str] = Counter()
        self._originals: dict[str, Any] = {}

    def marked(self, tensor: torch.Tensor) -> bool:
        return tensor in self._marked

    def _transfer(self, kind: str, tensor: torch.Tensor) -> None:
        self.transfers += 1
        self.syncs += 1
        self.transferred_bytes += tensor.numel() * tensor.element_size()
        self.where[kind] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        from_device = any(self.marked(t) for t in inputs)
        if name in SCALAR_READS and from_device:
            self._transfer("scalar read", inputs[0])
        elif name == "aten.copy_" and self.marked(args[1]) and not self.marked(args[0]):
            self._transfer("copy_ to host", args[1])
            return out
        elif name in DATA_DEPENDENT and from_device:
            self.syncs += 1
            self.where[name] += 1
        if from_device:
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self._marked[t] = True
        return out

    def _patch(self, name: str, wrapper: Any) -> None:
        self._originals[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, wrapper)

    def __enter__(self) -> DeviceTraffic:
        cpu, to = torch.Tensor.cpu, torch.Tensor.to
        numpy, tolist = torch.Tensor.numpy, torch.Tensor.tolist
        traffic = self

        def download(tensor: torch.Tensor, result: torch.Tensor, kind: str) -> torch.Tensor:
            traffic._transfer(kind, tensor)
            if result is tensor or result.data_ptr() == tensor.data_ptr():
                result = result.clone()  # on a GPU the host copy is a new tensor
            traffic._marked.pop(result, None)
            return result

        def counted_cpu(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = cpu(tensor, *args, **kwargs)
            return download(tensor, result, ".cpu()") if traffic.marked(tensor) else result

        def counted_to(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            result = to(tensor, *args, **kwargs)
            # Only a device spelled as a string counts: a torch.device object is usually some
            # tensor's or the model's own device (a no-op on a GPU), and cannot be told apart
            # from the host's on a CPU run.
            names = [a for a in (*args, kwargs.get("device")) if isinstance(a, str)]
            if traffic.marked(tensor) and any(torch.device(n).type == "cpu" for n in names):
                return download(tensor, result, ".to(cpu)")
            return result

        def counted_tolist(tensor: torch.Tensor) -> Any:
            if traffic.marked(tensor):
                traffic._transfer(".tolist()", tensor)
            return tolist(tensor)

        def counted_numpy(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if traffic.marked(tensor):
                traffic.numpy_on_device += 1
                traffic.where[".numpy() of a device tensor"] += 1
            return numpy(tensor, *args, **kwargs)

        self._patch("cpu", counted_cpu)
        self._patch("to", counted_to)
        self._patch("tolist", counted_tolist)
        self._patch("numpy", counted_numpy)
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            for name, original in self._originals.items():
                setattr(torch.Tensor, name, original)
            self._originals.clear()
