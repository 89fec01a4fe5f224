"""History: the numbers the script reports each iteration (losses, D's outputs), one column each,
and the watch on D's output for a NaN.

They arrive as tensors on the training device and stay there until read, all together, in
flush(): reading one with .item() would make the host wait for the GPU every iteration. A NaN or
an infinity among them is found there, and the run stops naming its iteration.
"""
import math

import torch


class History:
    def __init__(self, names, saved=None):
        """names: the numbers' names, in the order add() gets them; saved: the columns of a checkpoint."""
        self.names = list(names)
        self.columns = {"epoch": [], "iteration": [], **{name: [] for name in self.names}}
        if saved is not None:
            self.columns = {k: v.tolist() for k, v in saved.items()}
        self.pending = []  # (epoch, iteration, values on the device), not yet in the columns
        self.bad = None  # (epoch, iteration) of the first row with a NaN or infinity, once flush() met one

    def __len__(self):
        return len(self.columns["epoch"]) + len(self.pending)

    def add(self, epoch, i, values, also_bad=None):
        """Iteration i of epoch: its numbers, in the order of names. also_bad: a device flag that,
        when set, marks this row as bad as a NaN among the values would."""
        if len(values) != len(self.names):
            raise TypeError(f"run.step(i, ...) got {len(values)} numbers after i, but the run records "
                            f"{len(self.names)}: {', '.join(self.names)} (in that order); give exactly those.")
        row = [v.detach().float().reshape(()) for v in values]
        if also_bad is not None:
            row.append(torch.where(also_bad.reshape(()), float("nan"), 0.0))  # NaN when set
        self.pending.append((epoch, i, torch.stack(row)))

    def flush(self):
        """Move the pending numbers into the columns (one host sync). Returns (epoch, iteration) of
        the first row with a NaN or an infinity, or None; that row and those after it are dropped."""
        if not self.pending or self.bad:
            self.pending = []
            return self.bad
        pending, self.pending = self.pending, []
        values = torch.stack([v for _, _, v in pending]).cpu()
        for (epoch, i, _), row in zip(pending, values.tolist()):
            if not all(math.isfinite(x) for x in row):
                self.bad = (epoch, i)
                break
            self.columns["epoch"].append(epoch)
            self.columns["iteration"].append(i)
            for name, x in zip(self.names, row):
                self.columns[name].append(x)
        return self.bad

    def tensors(self):
        """The columns as tensors, for the checkpoint (much faster to save than long lists)."""
        return {k: torch.tensor(v, dtype=torch.int64 if k in ("epoch", "iteration") else torch.float32)
                for k, v in self.columns.items()}

    def means(self, names, k):
        """The means of the last k values of each named number (flush() first)."""
        return [sum(self.columns[name][-k:]) / len(self.columns[name][-k:]) for name in names]


def watch_for_nan(netD, device):
    """A flag on the device that turns True once D outputs a NaN, which is replaced by 0.5 before
    the loss sees it: BCELoss refuses NaN, on a GPU with a device-side assert after which the
    process cannot use CUDA again (not even to save the pictures). Finite outputs pass unchanged,
    bit for bit, and no host sync is added: the run stops, naming the iteration, when the numbers
    are next read (History.flush)."""
    seen = torch.zeros((), dtype=torch.bool, device=device)

    def hook(module, inputs, output):
        nan = torch.isnan(output)
        seen.logical_or_(nan.any())
        return torch.where(nan, 0.5, output)
    netD.register_forward_hook(hook)
    return seen
