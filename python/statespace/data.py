"""statespace-data's tasks (generated: copying, adding, memory tasks, ListOps, Pathfinder, …; read from
their standard files: IDX, ListOps TSV, IMDB, AAN, CIFAR-10 binary, Pathfinder PNG) as
``torch.utils.data.Dataset``s.

A dataset's items are example indices; its ``collate`` builds the padded batch in statespace's layout
(one call into the native reader per batch), so it pairs with any sampler — ``DistributedSampler``
included::

    ds = statespace.data.TaskDataset(open("configs/copying-s4d.toml").read(), "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, collate_fn=ds.collate)
    for x, y, lengths in loader: ...

Loading runs in the main process (``num_workers=0``): the native task is not picklable.
"""

import torch

from . import _native


class TaskDataset(torch.utils.data.Dataset):
    """The ``split`` (train, val, test) of the task of a run config (TOML text), its files under
    ``data_dir`` (or the config's ``task.data_dir``)."""

    def __init__(self, run_config_toml, split="train", data_dir=None):
        self.task = _native.Task(run_config_toml, None if data_dir is None else str(data_dir))
        self.split = split
        self._n = self.task.size(split)

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(f"index {i}: the {self.split} split has {self._n} examples")
        return int(i)

    @property
    def io(self):
        """``dict(d_input, vocab, d_output, pair)``: the model shape the task needs."""
        d_input, vocab, d_output, pair = self.task.io()
        return dict(d_input=d_input, vocab=vocab, d_output=d_output, pair=pair)

    def collate(self, indices):
        """``(x, y, lengths)`` of the examples ``indices``: ``x`` ``[B, channels, L]`` (float32) or
        ``[B, L]`` token ids, ``y`` labels (unscored positions -100, ``cross_entropy``'s ``ignore_index``)
        or targets, ``lengths`` the valid lengths (empty: full)."""
        return self.task.batch(self.split, [int(i) for i in indices])
