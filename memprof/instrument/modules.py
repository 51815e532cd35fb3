"""Which module is running: a stack of module paths kept by forward pre/post hooks.

Paths are ``named_modules`` names (``bert.encoder.layer.3.attention.self``), ``""`` for the model
itself. A peft wrapper's prefix (``base_model.model.``) is dropped, and so is the
``modules_to_save.<adapter>`` level of the head copy peft trains, so that the rows of a LoRA model
line up with those of the model it wraps. A module reached under two names keeps the first. A MEFT
reversible stack and its submodules are named for what it is (memprof.results.module_names NOTE [ Reversible
stacks ]).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from memprof.results.module_names import reversible_stack_name, stack_member_name

#: Prefix peft puts in front of the wrapped model's module names.
PEFT_PREFIX = "base_model.model."
_MODULES_TO_SAVE = re.compile(r"\.modules_to_save\.[^.]+")


def module_paths(model: nn.Module) -> dict[int, str]:
    """``id(module) -> path`` for every module of ``model``, peft's prefix removed, reversible stacks named."""
    paths: dict[int, str] = {}
    stacks: list[tuple[str, str, str]] = []  # (path of a reversible stack, its container, its name)
    for raw, module in model.named_modules(remove_duplicate=False):
        if id(module) in paths:
            continue
        name = raw
        if name.startswith(PEFT_PREFIX):
            name = name[len(PEFT_PREFIX) :]
        elif name in ("base_model", "base_model.model"):
            name = ""
        if ".modules_to_save." in name:
            name = _MODULES_TO_SAVE.sub("", name, count=1)
        for path, container, stack in stacks:  # named_modules lists a stack before its submodules
            if name.startswith(path + "."):
                name = stack_member_name(name[len(path) + 1 :], container, stack)
                break
        if _is_reversible_stack(module):
            container = _container(model, raw, name)
            stack = reversible_stack_name(container, len(module.base_layers), module.reversible_layers)
            stacks.append((name, container, stack))
            name = stack
        paths[id(module)] = name
    return paths


def _is_reversible_stack(module: nn.Module) -> bool:
    # A model holds a MEFTStack only once meft.reversible is imported: looking it up in sys.modules
    # spares every other model (memprof.track on a user's model) the import of meft.
    reversible = sys.modules.get("meft.reversible")
    return reversible is not None and isinstance(module, reversible.MEFTStack)


def _container(model: nn.Module, raw: str, name: str) -> str:
    """The path of the layer list a stack stands in for: its one-element ModuleList's (whose index
    ``.0`` is dropped), else its own."""
    container, _, index = name.rpartition(".")
    raw_container = raw.rpartition(".")[0]
    holder = model.get_submodule(raw_container) if raw_container else model
    if index == "0" and isinstance(holder, nn.ModuleList) and len(holder) == 1:
        return container
    return name


class ModuleStack:
    """Forward hooks keeping ``stack``, the paths of the running modules of ``model`` (innermost last).

    ``on_outer`` is called with True when the first (outermost) module forward starts and with
    False when it returns: the live tracker uses it to find recomputations during backward.
    Use as a context manager; the hooks are removed on exit. The hooks are global ones (two
    handles, not two per module: registering thousands of handles costs more than the step of a
    small model); modules that are not part of ``model`` are ignored.
    """

    def __init__(self, model: nn.Module, on_outer: Callable[[bool], None] | None = None) -> None:
        self.model = model
        self.paths = module_paths(model)
        self.stack: list[str] = []
        self.on_outer = on_outer
        self._handles: list = []

    @property
    def current(self) -> str:
        """Path of the innermost running module, ``""`` outside any."""
        return self.stack[-1] if self.stack else ""

    def _pre(self, module: nn.Module, args) -> None:
        path = self.paths.get(id(module))
        if path is None:
            return
        if not self.stack and self.on_outer is not None:
            self.on_outer(True)
        self.stack.append(path)

    def _post(self, module: nn.Module, args, output) -> None:
        if id(module) not in self.paths or not self.stack:
            return
        self.stack.pop()
        if not self.stack and self.on_outer is not None:
            self.on_outer(False)

    def __enter__(self) -> ModuleStack:
        self._handles.append(register_module_forward_pre_hook(self._pre))
        self._handles.append(register_module_forward_hook(self._post, always_call=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.stack.clear()
