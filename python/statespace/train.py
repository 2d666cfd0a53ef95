"""``python -m statespace.train``: a statespace run (``statespace train``'s config, run directory and
resume) trained from Python on PyTorch — one process, or many GPUs and nodes under ``torchrun`` with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs)::

    python -m statespace.train --config configs/copying-s4d.toml --out runs/copying
    torchrun --nproc_per_node 8 -m statespace.train --config configs/lra-listops-s4d.toml --out runs/lo
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \\
        -m statespace.train --config … --out …          (and --node_rank 1 on the second node)
    python -m statespace.train --resume runs/copying    (same config, same result; also under torchrun)

The loop is statespace-train's, the CLI's own (``_native.run``): the data order is a function of
``train.seed`` and the epoch, ``train.batch_size`` is the *global* batch and rank ``r`` of ``K`` takes
examples ``r, r+K, …`` of each batch (the rows a DistributedSampler over the run's order gives), the
loss is the mean over the global batch (sums and counts all-reduced), AdamW and clipping are
statespace's (decoupled weight decay, the SSM parameter groups), checkpoints and metrics are written by
rank 0 in the run-directory format of docs/checkpoint-format.md — so ``statespace train --resume``,
``statespace eval`` and ``Model.from_run`` read a run made here, and the other way round.

K ranks compute what one process computes on the same global batch (to float rounding) when the model
has no dropout and LayerNorm: dropout masks are drawn per rank (rank 0's are the CLI's), and BatchNorm's
batch statistics are per rank (PyTorch's plain BatchNorm, not SyncBatchNorm; the running statistics are
rank 0's: DDP broadcasts them before each training forward, and evaluation and checkpoints use them). A
resume is exact on the same number of ranks whatever the model; on another number, only as far as the
above holds.

Ranks other than 0 run the same loop on a private copy of the run directory (``$TMPDIR/statespace-rankR-*``,
removed at the end; it holds their checkpoints, as large as rank 0's).

Ctrl-C / SIGTERM: every rank stops after the same step and rank 0 writes ``last.safetensors`` (exit 130);
a rank that dies ends the job (torchrun), and ``--resume`` continues from the last checkpoint. Resuming
on several nodes needs the run directory only on rank 0's node: rank 0 sends the others its files.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import Model, _native


def _parser():
    p = argparse.ArgumentParser(prog="python -m statespace.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the run configuration (statespace train --help lists every field)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.safetensors")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<config name>)")
    p.add_argument("--data", metavar="DIR", help="directory of the dataset files (overrides task.data_dir)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda:LOCAL_RANK when CUDA is available)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _mix(seed, rank):
    """Rank ``rank``'s dropout seed of a step (rank 0 keeps the run's, so one process = the CLI)."""
    return seed if rank == 0 else (seed ^ (rank * 0x9E3779B97F4A7C15)) & 0xFFFFFFFFFFFFFFFF


class _Engine:
    """The Python side of the training engine: builds the module (DDP-wrapped on several ranks), and
    per batch takes this rank's examples, runs forward, loss and backward, and all-reduces the loss."""

    def __init__(self, device, rank, world):
        self.device, self.rank, self.world = device, rank, world
        self.stop = False
        self._synced = False
        self._calls = 0
        fault = os.environ.get("STATESPACE_FAULT_KILL_AFTER")  # tests: "RANK:N" kills RANK at its Nth step
        self._kill = tuple(int(v) for v in fault.split(":")) if fault else None

    def build(self, native):
        self.model = Model(_native_model=native).to(self.device)
        self.net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return self.tensors()

    def tensors(self):
        return self.model._tensors(self.device, torch.float32)

    def loaded(self):
        self._synced = False

    def _rows(self, x, y, lengths, n):
        """This rank's examples ``r, r+K, …`` (both towers of a pair example), and their lengths."""
        ex = torch.arange(self.rank, n, self.world)
        # a pair batch holds every example's first tower, then every second tower
        rows = torch.cat([ex, ex + n]) if x.shape[0] == 2 * n else ex
        lens = [lengths[i] for i in rows.tolist()] if lengths else []
        return x[rows].to(self.device), y[ex].to(self.device), lens, len(ex)

    def _allreduce(self, *values):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def batch(self, x, y, lengths, n, train, seed):
        if train:
            self._calls += 1
            if self._kill and self._kill == (self.rank, self._calls):
                os.kill(os.getpid(), signal.SIGKILL)
            self._synced = False
        elif self.world > 1 and not self._synced:
            # evaluation with rank 0's running statistics (what the checkpoints hold)
            with torch.no_grad():
                for b in self.model.buffers():
                    dist.broadcast(b, 0)
            self._synced = True
        x, y, lengths, mine = self._rows(x, y, lengths, n)
        regression = y.is_floating_point()
        if train:
            if mine == 0:
                raise ValueError(f"train.batch_size = {n} is smaller than the {self.world} ranks")
            self.model.train()
            for p in self.model.parameters():
                p.grad = None
            out = self.net(x, lengths, seed=_mix(seed, self.rank))
        elif mine == 0:
            out = None
        else:
            self.model.eval()
            with torch.no_grad():
                out = self.model(x, lengths)
        if out is None:
            lsum, count, correct = torch.zeros((), dtype=torch.float64), 0, 0
        elif regression:
            lsum, count, correct = ((out - y) ** 2).sum(), out.numel(), 0
        else:
            # [b, K] against [b], or [b, K, L] against [b, L] with -100 at unscored positions
            lsum = F.cross_entropy(out, y, ignore_index=-100, reduction="sum")
            scored = y != -100
            count = int(scored.sum())
            correct = int(((out.argmax(1) == y) & scored).sum())
        g_lsum, g_count, g_correct, g_stop = self._allreduce(
            float(lsum.detach()), count, correct, float(self.stop and train))
        if train:
            # DDP averages the ranks' gradients: each rank's share of the global mean, times K
            (lsum * (self.world / max(g_count, 1))).backward()
        loss = g_lsum / g_count if g_count else 0.0
        counted = n if regression else int(g_count)
        return loss, int(g_correct), counted, g_stop > 0


def _device(arg):
    if arg:
        d = torch.device(arg)
    elif torch.cuda.is_available():
        d = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        d = torch.device("cpu")
    if d.type == "cuda":
        if d.index is None:
            d = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if not torch.cuda.is_available():
            raise ValueError("this machine has no CUDA device torch can use")
        if d.index >= torch.cuda.device_count():
            raise ValueError(f"cuda:{d.index} does not exist ({torch.cuda.device_count()} CUDA devices)")
        torch.cuda.set_device(d)
    elif d.type != "cpu":
        raise ValueError("statespace runs on cpu or cuda[:N]")
    return d


def _read(path, binary=False):
    try:
        with open(path, "rb" if binary else "r", **({} if binary else {"encoding": "utf-8"})) as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None


def _plan(args, world):
    """Rank 0's view of the run, which every rank then follows: config text, its origin and
    ``--set`` overrides, run directory, resume, the files a resumed run's other ranks need."""
    if args.resume:
        if args.config or args.out:
            raise ValueError("--resume DIR takes the run's own config.toml and directory: "
                             "drop --config/--out")
        out = args.resume
        origin = os.path.join(out, "config.toml")
        text = _read(origin)
        files = {}
        for name in ("last.safetensors", "best.safetensors", "metrics.jsonl"):
            path = os.path.join(out, name)
            if os.path.exists(path):
                files[name] = _read(path, binary=True)
        if "last.safetensors" not in files:
            raise ValueError(f"{os.path.join(out, 'last.safetensors')}: no checkpoint to resume from")
    elif args.config:
        origin = args.config
        text = _read(origin)
        out = args.out or os.path.join("runs", os.path.splitext(os.path.basename(origin))[0])
        if os.path.exists(os.path.join(out, "last.safetensors")):
            raise ValueError(f"{out} already holds a run: use --resume {out} or another --out")
        files = {}
    else:
        raise ValueError("give --config FILE.toml (a new run) or --resume DIR")
    import tomllib

    batch = tomllib.loads(_native.check_config(text, origin, args.sets))["train"]["batch_size"]
    if batch < world:
        raise ValueError(f"{origin}: train.batch_size = {batch} (the global batch) is smaller than the "
                         f"{world} ranks: every rank needs at least one example")
    return dict(text=text, origin=origin, sets=list(args.sets), out=out, resume=bool(args.resume),
                files=files)


def main(argv=None):
    args = _parser().parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    try:
        device = _device(args.device)
    except (RuntimeError, ValueError) as e:
        print(f"error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    scratch = None
    try:
        plan, error = None, None
        if rank == 0:
            try:
                plan = _plan(args, world)
            except ValueError as e:
                error = str(e)
        if world > 1:
            box = [(plan, error)]
            dist.broadcast_object_list(box, 0)
            plan, error = box[0]
        if error:
            if rank == 0:
                print(f"error: {error}", file=sys.stderr)
            return 2
        out = plan["out"]
        if rank > 0:
            # the other ranks run the same loop on a private copy of the run directory
            scratch = out = tempfile.mkdtemp(prefix=f"statespace-rank{rank}-")
            for name, data in plan["files"].items():
                with open(os.path.join(out, name), "wb") as f:
                    f.write(data)
        engine = _Engine(device, rank, world)

        def request_stop(signum, frame):
            if engine.stop:
                raise KeyboardInterrupt
            engine.stop = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        if rank == 0 and not args.quiet:
            where = f" on {world} ranks" if world > 1 else ""
            print(f"{'resuming' if plan['resume'] else 'training'} {plan['origin']} → {plan['out']}"
                  f" ({device}{where})", file=sys.stderr)
        progress = "silent" if args.quiet or rank > 0 else ("bar" if sys.stderr.isatty() else "lines")
        try:
            summary = json.loads(_native.run(
                plan["text"], plan["origin"], plan["sets"], out, plan["resume"], engine, args.data,
                progress, rank == 0, device.type == "cuda"))
        except ValueError as e:
            print(f"error{f' (rank {rank})' if world > 1 else ''}: {e}", file=sys.stderr)
            return 2
        if summary["outcome"] == "stopped":
            if rank == 0:
                print(f"stopped at step {summary['steps']} of {summary['total_steps']}; resume with: "
                      f"python -m statespace.train --resume {plan['out']}", file=sys.stderr)
            return 130
        if rank == 0 and not args.quiet:
            test = summary.get("test") or {}
            score = (f"accuracy {100 * test['acc']:.2f}%" if test.get("acc") is not None
                     else f"MSE {test.get('loss', float('nan')):.5f}")
            print(f"test {score} · {summary['steps']} steps in {summary['seconds']:.1f} s "
                  f"({summary['tokens_per_s']:.0f} tokens/s) → {plan['out']}", file=sys.stderr)
        return 0
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
