"""The ``megatron`` engine: a training loop of our own over megatron-core, as Megatron-LM and Megatron-Bridge train.

The seed's pieces, unchanged: the ``MegatronModule`` built by its config's ``configure_model``, the
``MegatronLossReduction``s (``forward`` per micro-batch, ``reduce`` for the logged loss), the data module with its
``MegatronDataSampler`` settings (micro / global batch, consumed samples, epoch resampling). Read :func:`train` top to
bottom: the parallel state, the model, its DDP wrapper and the optimizer, a resume, then the loop — each step zeroes
the gradients, runs the step's micro-batches forward and backward (megatron-core's ``get_forward_backward_func()``,
which ends with ``finalize_model_grads``: the data-parallel reduce-scatter), and steps the distributed optimizer;
validation, logs and checkpoints at the recipe's cadence.

- GPU: megatron-core's DDP and distributed Adam (``get_megatron_optimizer``), the precision as the recipe says
  (``Float16Module`` for bf16 / fp16, fp32 main weights), checkpoints in Megatron's ``torch_dist`` format through
  ``dist_checkpointing``. Adam is torch's fused, *capturable* formulation (one kernel, its step counters and bias
  correction on the GPU), in eager and graph mode alike, so that a captured step computes what the eager one does.
  On one rank the reduce-scatter and all-gather, identities there, are skipped. With
  ``trainer.cuda_graph`` the whole step, the gathers of its batch included, is captured in one CUDA graph after a
  few eager steps and replayed: per step only its indices are copied in.
- CPU: the same loop with torch's DDP over gloo (several ranks) and torch's Adam, fp32, and Lightning-format
  ``.ckpt`` files, so CI trains it; per step and per validation it computes what the Lightning engine does, bit for
  bit (tests/e2e/test_megatron_engine.py).

Both write the run folder as the Lightning engine does: ``csv_logs/version_N/metrics.csv`` (``epoch, step,
train_loss, val_loss``; ``step`` counted from 0 as Lightning's), TensorBoard events in ``tb_logs/``, and
``checkpoints/`` holding the last and the ``save_top_k`` best by val_loss, named ``step=S-val_loss=V[-last]``, each
with ``context/model.yaml`` (what ``finetune``, ``predict``, ``report`` and the launcher's checks read).
"""

import contextlib
import csv
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import numpy as np
import torch

from megatron_mnist import defaults
from megatron_mnist.checkpoint_paths import last_checkpoint, write_context
from megatron_mnist.constraints import check_graph_mode, micro_batches_per_step
from megatron_mnist.job.builders import Adam, ResumeSettings, RunFolder, TrainerSettings
from megatron_mnist.job.preemption import StopSignals
from megatron_mnist.job.process import freeze_heap
from megatron_mnist.job.progress_file import note, writer_from_environment
from megatron_mnist.run_dirs import global_rank, renamed_from

# what the distributed optimizer's checkpoint holds: every rank's shard in one fully reshardable layout (the
# dp_reshardable default cannot save torch Adam's scalar `step` without Apex / TE), as the Lightning engine saves it
SHARDED_METADATA = {
    "singleton_local_shards": False,
    "chained_optim_avoid_prefix": True,
    "distrib_optim_sharding_type": "fully_reshardable",
    "distrib_optim_fully_reshardable_mem_efficient": False,
}
# processes that write a checkpoint's weights (torch_dist's thread_count, 2 by default): each is forked from the
# training process for every save, at a cost that grows with the process's mappings (CUDA's among them), and each
# writes a file of its own; this model's checkpoint is a few hundred KB, which one writes as fast as two
CHECKPOINT_WRITERS = 1
CAPTURE_WARMUP_STEPS = 3  # eager steps on the capture stream before the step is captured (counted as steps)


@dataclass
class MegatronLoop:
    """What ``builders.trainer(loop="megatron")`` returns: the settings this engine trains with. ``on_step_end``
    (step, validated) is called after each step — the benchmarks' timer (benchmarks/gpu_throughput.py)."""

    settings: TrainerSettings
    training_engine: str = "megatron"
    on_step_end: object = None


def make_trainer(settings: TrainerSettings) -> MegatronLoop:
    if settings.accelerator == "gpu":
        from megatron_mnist.job.megatron_writer import use_forked_result_queue

        use_forked_result_queue()  # before CUDA starts: Megatron's checkpoint writer, started the cheap way
    return MegatronLoop(settings)


# -- the parts a step is made of ------------------------------------------------------------------------------------
@dataclass
class Parts:
    """The model and what trains it, as built for this process (see :func:`build`)."""

    module: torch.nn.Module  # the seed's MegatronModule, unwrapped
    model: torch.nn.Module  # what runs forward: DDP over it (and Float16Module on a GPU in bf16 / fp16)
    optimizer: object  # megatron-core's optimizer (GPU) or torch's Adam (CPU)
    forward_backward: object  # megatron-core's schedule (GPU) or :func:`forward_backward_on_cpu`
    reduction: object  # the model's MegatronLossReduction, for training and validation
    device: torch.device
    dp_rank: int = 0
    dp_size: int = 1
    extra: dict = field(default_factory=dict)


def init_process_group(settings: TrainerSettings, seed: int) -> tuple[int, int]:
    """The ranks the launcher started, as one data-parallel group: (rank, world size). One process needs no group
    on a CPU; on a GPU megatron-core's parallel state needs one even there."""
    world = settings.world_size
    rank = global_rank()
    if world > 1:
        rendezvous_from_slurm()
    if settings.accelerator == "gpu":
        from megatron.core import parallel_state, tensor_parallel

        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
        torch.cuda.set_device(local_rank)
        if not torch.distributed.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()) if world == 1 else "29500")
            torch.distributed.init_process_group("nccl", world_size=world, rank=rank)
        if not parallel_state.model_parallel_is_initialized():
            parallel_state.initialize_model_parallel()  # TP = PP = 1: every rank is data parallel
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    elif world > 1 and not torch.distributed.is_initialized():
        # collectives give up after collective_timeout_s: a lost rank fails the others instead of hanging them
        torch.distributed.init_process_group(
            "gloo", world_size=world, rank=rank, timeout=timedelta(seconds=settings.collective_timeout_s)
        )
    return rank, world


def rendezvous_from_slurm(env=os.environ) -> None:
    """srun-started ranks (no torchrun) meet at the job's first node: MASTER_ADDR and MASTER_PORT from Slurm's
    variables where the launcher set none (the port from the job id, as Lightning's SLURM environment picks it)."""
    if "MASTER_ADDR" in env or "SLURM_JOB_NODELIST" not in env:
        return
    import subprocess

    hosts = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    env["MASTER_ADDR"] = hosts[0]
    env.setdefault("MASTER_PORT", str(15000 + int(env.get("SLURM_JOB_ID", "0")[-4:] or 0)))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(config, optim: Adam, settings: TrainerSettings, rank: int, world: int) -> Parts:
    """The seed's model from its config, wrapped and with its optimizer, on this process's device."""
    module = config.configure_model()  # the initial checkpoint's weights too, where the config names one
    reduction = config.get_loss_reduction_class()()
    if settings.accelerator == "cpu":
        model = module
        if world > 1:
            model = torch.nn.parallel.DistributedDataParallel(module)
        # torch's Adam with the Lightning engine's parameter groups (PytorchOptimizerModule's rule: no weight decay
        # on biases), so that both engines compute the same update
        decay = [p for n, p in module.named_parameters() if "bias" not in n]
        no_decay = [p for n, p in module.named_parameters() if "bias" in n]
        optimizer = torch.optim.Adam(
            [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0}],
            lr=optim.lr, betas=(optim.adam_beta1, optim.adam_beta2), eps=optim.adam_eps,
        )  # fmt: skip
        return Parts(module, model, optimizer, forward_backward_on_cpu, reduction, torch.device("cpu"), rank, world)

    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.transformer.module import Float16Module

    from megatron_mnist.job.megatron_optim import make_resumable, optimizer_config

    module.cuda(torch.cuda.current_device())
    wrapped = module
    if settings.precision in ("bf16-mixed", "16-mixed"):
        config.bf16, config.fp16 = settings.precision == "bf16-mixed", settings.precision == "16-mixed"
        wrapped = Float16Module(config, module)  # bf16 / fp16 parameters; inputs cast in, outputs as they are
    # NeMo's DDP settings for this recipe (builders' Lightning path says why: no NaN check, a blocking read per step),
    # and Megatron-LM's fp32 gradients under bf16 (see grads_in_fp32)
    ddp_config = DistributedDataParallelConfig(check_for_nan_in_grad=False, use_distributed_optimizer=True,
                                               grad_reduce_in_fp32=grads_in_fp32(settings.precision))  # fmt: skip
    model = DistributedDataParallel(config, ddp_config, wrapped)
    opt_config = optimizer_config(optim, settings.precision)
    optimizer = get_megatron_optimizer(opt_config, [model])
    use_fused_capturable_adam(optimizer)
    make_resumable(optimizer, opt_config)
    from megatron.core import parallel_state

    dp_rank, dp_size = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    # what megatron-core's schedule reads from the model's config (as Megatron-LM's training loop sets it)
    config.no_sync_func = model.no_sync
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss if settings.precision == "16-mixed" else None
    config.timers = None
    if dp_size == 1:
        skip_one_rank_collectives(model, config)
    device = torch.device("cuda", torch.cuda.current_device())
    return Parts(module, model, optimizer, get_forward_backward_func(), reduction, device, dp_rank, dp_size)


def grads_in_fp32(precision: str) -> bool:
    """Whether DDP's gradient buffer is fp32: under bf16, as Megatron-LM trains (``--bf16`` turns on
    ``--accumulate-allreduce-grads-in-fp32``). The distributed optimizer's fp32 main gradients are then views of that
    buffer instead of a ``.float()`` copy per parameter per step, and micro-batches accumulate (and ranks reduce)
    without rounding to bf16 in between. One micro-batch on one rank computes the same values either way (a bf16
    gradient is exact in fp32); fp16 keeps its fp16 buffer, as Megatron-LM's default does."""
    return precision == "bf16-mixed"


def use_fused_capturable_adam(optimizer) -> None:
    """torch's Adam under megatron-core's distributed optimizer, as one fused kernel with its step counters and bias
    correction on the GPU. Capturable: the same kernels in eager and graph mode, so that a captured step computes
    what the eager one does (the default formulation computes the bias correction on the host). Fused: one launch
    for every parameter instead of torch's ~15 multi-tensor launches a step (megatron-core picks torch's foreach
    Adam where neither Apex nor Transformer Engine is installed). Applied again after a checkpoint is loaded:
    torch's ``load_state_dict`` takes the saved param groups' settings."""
    for group in optimizer.param_groups:
        group.update(capturable=True, fused=True, foreach=False)


def skip_one_rank_collectives(model, config) -> None:
    """On one data-parallel rank the gradients' reduce-scatter and the parameters' all-gather are identities: the
    rank's shard is the whole buffer, and the collective copies it onto itself. megatron-core launches them anyway
    (NCCL's coalescing manager, a bucket walk): host time every step that a one-GPU run need not spend. Nothing else
    of ``finalize_model_grads`` applies to this model on one rank (no tensor, pipeline or expert parallelism, no
    per-token loss), and the bucket's gradient scaling is 1/1."""
    config.finalize_model_grads_func = None
    model.start_param_sync = _no_collective


def _no_collective(*_, **__) -> None:
    return None


def forward_backward_on_cpu(*, forward_step_func, data_iterator, model, num_microbatches, forward_only=False, **_):
    """megatron-core's no-pipelining schedule on a CPU (its own keeps a counter on the GPU): each micro-batch's
    forward, its loss scaled by 1/micro-batches, backward (gradients synchronised on the last only); the reductions'
    per-micro-batch reports."""
    reported = []
    for i in range(num_microbatches):
        last = i == num_microbatches - 1
        sync = contextlib.nullcontext() if last or forward_only or not hasattr(model, "no_sync") else model.no_sync()
        with sync, torch.no_grad() if forward_only else contextlib.nullcontext():
            output, loss_func = forward_step_func(data_iterator, model)
            loss, report = loss_func(output)
            if not forward_only:
                (loss / num_microbatches).backward()
        reported.append(report)
    return reported


def forward_step(reduction, data_iterator, model):
    """megatron-core's ``forward_step_func``: the next micro-batch through the model, and its loss function."""
    batch = next(data_iterator)
    return model(batch["data"]), partial(_loss, reduction, batch)


def _loss(reduction, batch, output):
    reduction.setup(batch)  # as NeMo's step does before the reduction's forward
    return reduction.forward(batch, output)


def data_parallel_mean(value: torch.Tensor, parts: Parts) -> torch.Tensor:
    """A logged loss averaged over the ranks where the reduction did not (the CPU path: Lightning's sync_dist)."""
    if parts.device.type == "cpu" and parts.dp_size > 1:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value = value / parts.dp_size
    return value


# -- the loop ---------------------------------------------------------------------------------------------------------
class Step:
    """One optimizer step over ``micro_batches`` micro-batches of ``files``' digits, given as their indices (the data
    module's ``megatron_indices``): eager, or replayed from a CUDA graph that gathers them itself."""

    STAGING = 4  # pinned buffers the indices go through to the GPU in graph mode: the host may run that far ahead

    def __init__(self, parts: Parts, micro_batches: int, micro_batch_size: int, files):
        self.parts, self.files = parts, files
        self.micro_batches, self.micro_batch_size = micro_batches, micro_batch_size
        self.graph = None
        self.static_index = None  # graph mode: the step's indices, all micro-batches, read by the captured gathers
        self.staging, self.staged, self.turn = [], [], 0  # graph mode: pinned buffers, their copies' events
        self.loss_out = None

    def batches(self, indices: list) -> list[dict]:
        """The micro-batches at ``indices``, gathered where the digits live and put on the model's device (the
        same place unless ``data.device_resident=false``)."""
        return [on(self.parts.device, self.files.gather(i)) for i in indices]

    def eager(self, batches: list[dict]) -> list[dict]:
        """The step, eagerly; the loss reduction's per-micro-batch reports (see :meth:`loss`)."""
        parts = self.parts
        if parts.device.type == "cuda":
            parts.model.zero_grad_buffer()
        parts.optimizer.zero_grad()
        reported = parts.forward_backward(
            forward_step_func=partial(forward_step, parts.reduction),
            data_iterator=iter(batches),
            model=parts.model,
            num_microbatches=self.micro_batches,
            seq_length=1,
            micro_batch_size=self.micro_batch_size,
            forward_only=False,
        )
        parts.optimizer.step()
        return reported

    def loss(self, outcome) -> torch.Tensor:
        """The step's loss from what :meth:`eager` or :meth:`replay` returned: reduced here, when it is read (a log
        step), not on every step."""
        return outcome if isinstance(outcome, torch.Tensor) else self.parts.reduction.reduce(outcome).detach()

    def capture(self, indices: list) -> None:
        """Capture the whole step — the gathers of its micro-batches from :attr:`static_index`, zero, forward and
        backward, finalize (reduce-scatter), the optimizer — so that a replay needs only the step's indices copied
        in: one small host-to-device copy per step, the batches gathered on the GPU inside the graph."""
        self.static_index = torch.from_numpy(np.concatenate(indices)).to(self.parts.device)
        self.staging = [torch.empty_like(self.static_index, device="cpu").pin_memory() for _ in range(self.STAGING)]
        self.staged = [torch.cuda.Event() for _ in range(self.STAGING)]
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a CUDA call of another thread during the capture (NCCL's watchdog polls its events) does not
        # invalidate it, as it can in torch's default global mode
        with torch.cuda.graph(self.graph, stream=torch.cuda.current_stream(), capture_error_mode="thread_local"):
            batches = [self.files.gather(index) for index in self.static_index.split(self.micro_batch_size)]
            self.loss_out = self.loss(self.eager(batches))

    def replay(self, indices: list) -> torch.Tensor:
        staging, staged = self.staging[self.turn], self.staged[self.turn]
        self.turn = (self.turn + 1) % self.STAGING
        staged.synchronize()  # the copy that last read this pinned buffer (STAGING steps ago) has run
        np.concatenate(indices, out=staging.numpy())
        self.static_index.copy_(staging, non_blocking=True)
        staged.record()
        self.graph.replay()
        return self.loss_out


def on(device: torch.device, batch: dict) -> dict:
    """``batch`` on ``device`` (nothing to do where it was gathered there)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


@dataclass
class RunState:
    """What a checkpoint carries beside the weights and the optimizer: where the run is."""

    step: int = 0
    consumed_samples: int = 0
    val_loss: float | None = None  # the latest validation's
    best: list = field(default_factory=list)  # [(val_loss, checkpoint name)], best first


class LossReadback:
    """The logged train losses, read back without making the host wait for the device.

    On a log step the loss (a device tensor) is copied into pinned host memory behind the step's kernels, and the
    value is read once that copy has run: at a later step's :meth:`ready`, or at :meth:`drain` before a validation
    and at the end (they wait anyway). ``float(loss)`` on the log step itself would stop the host there until the GPU
    caught up — in graph mode, where the host runs ahead of the replays, an idle GPU every ``log_every_n_steps``.
    Same values, same rows, in the same order; on a CPU the value is read at once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pending: list[tuple[int, torch.Tensor, object]] = []  # (row's step, host copy, its copy's event)

    def push(self, step: int, loss: torch.Tensor) -> None:
        if self.device.type == "cpu":
            self.pending.append((step, loss.detach().float(), None))
            return
        host = torch.empty((), dtype=torch.float32, pin_memory=True)
        host.copy_(loss.detach().float(), non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending.append((step, host, done))

    def ready(self) -> list[tuple[int, float]]:
        """The (step, loss) pairs whose copies have run, oldest first; the rest stay pending."""
        out = []
        while self.pending and (self.pending[0][2] is None or self.pending[0][2].query()):
            step, host, _ = self.pending.pop(0)
            out.append((step, float(host)))
        return out

    def drain(self) -> list[tuple[int, float]]:
        """Every pending pair, waiting for the last copy."""
        if self.pending and self.pending[-1][2] is not None:
            self.pending[-1][2].synchronize()
        return self.ready()


class RunLogs:
    """``csv_logs/version_N/metrics.csv`` (a new version per invocation, as Lightning's CSVLogger) and TensorBoard
    events in ``tb_logs/``; global rank 0 only."""

    COLUMNS = ("epoch", "step", "train_loss", "val_loss")

    def __init__(self, run_dir: Path):
        versions = [int(p.name[8:]) for p in run_dir.glob("csv_logs/version_*") if p.name[8:].isdigit()]
        folder = run_dir / "csv_logs" / f"version_{max(versions, default=-1) + 1}"
        folder.mkdir(parents=True)
        self._file = open(folder / "metrics.csv", "w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.COLUMNS)
        self.rows = 0
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tb_logs"))

    def log(self, step: int, **values: float) -> None:
        self._csv.writerow([0, step, *(values.get(c, "") for c in self.COLUMNS[2:])])
        self._file.flush()
        self.rows += 1
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def train(model, data, trainer: MegatronLoop, optim: Adam, log: RunFolder, resume: ResumeSettings, seed: int):
    """Train; the run's summary on global rank 0 (None on the other ranks)."""
    settings = trainer.settings
    # graph mode's rules once more, now that the data module is known (a Python recipe never met the launcher)
    check_graph_mode(settings.engine, settings.cuda_graph, settings.accelerator, settings.precision,
                     data.device_resident)  # fmt: skip
    rank, world = init_process_group(settings, seed)
    seed_everything(seed)
    graph_stream = torch.cuda.Stream() if settings.cuda_graph else None
    # graph mode: the model, its DDP and the optimizer are built on the stream the step is captured on (DDP keeps
    # each parameter's gradient-accumulation node, which remembers the stream it was made on: built on the default
    # stream, the first capture of a process failed in the backward pass)
    with torch.cuda.stream(graph_stream) if graph_stream is not None else contextlib.nullcontext():
        parts = build(model, optim, settings, rank, world)
        data.build("fit", settings.max_steps, parts.device)
        run_dir = Path(log.run_dir)
        state = RunState()
        if resume.resume_if_exists and (last := last_checkpoint(run_dir)) is not None:
            note("loading its checkpoint")
            state = load_checkpoint(last, parts)
            print(f"resumed from {last} at step {state.step}", flush=True)
        freeze_heap()
        summary = loop(parts, data, settings, log, run_dir, state, rank == 0, trainer.on_step_end)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators from ``seed`` (what Lightning's ``seed_everything`` seeds)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loop(parts: Parts, data, settings: TrainerSettings, log: RunFolder, run_dir: Path, state: RunState, zero: bool,
         on_step_end=None):  # fmt: skip
    micro_batches = micro_batches_per_step(data.global_batch_size, data.micro_batch_size, parts.dp_size)
    logs = RunLogs(run_dir) if zero else None
    progress = writer_from_environment() if zero else None
    bar = _progress_bar(settings, state.step) if zero and settings.enable_progress_bar else None
    signals = StopSignals()
    signals.install()
    interval = min(settings.val_check_interval, settings.max_steps)
    step = Step(parts, micro_batches, data.micro_batch_size, data.files("train"))
    indices = iter(data.megatron_indices("train", state.consumed_samples, parts.dp_rank, parts.dp_size))
    readback = LossReadback(parts.device)
    train_loss, saved_at, done_here = None, None, 0
    started = time.monotonic()
    if progress:
        progress.write("training", state.step, settings.max_steps, None, state.val_loss)
    try:
        while state.step < settings.max_steps:
            step_indices = [next(indices) for _ in range(micro_batches)]
            if step.graph is not None:
                outcome = step.replay(step_indices)
            else:
                outcome = step.eager(step.batches(step_indices))
                if settings.cuda_graph and done_here + 1 == CAPTURE_WARMUP_STEPS:
                    step.capture(step_indices)  # records the step (runs nothing): it replays from the next step on
            done_here += 1
            logged_step = state.step  # Lightning's label of this step's row: the steps done before it
            state.step += 1
            state.consumed_samples += data.global_batch_size
            if state.step % settings.log_every_n_steps == 0:
                readback.push(logged_step, data_parallel_mean(step.loss(outcome), parts))
            validating = state.step % interval == 0
            for row_step, train_loss in readback.drain() if validating else readback.ready():
                if logs:
                    logs.log(row_step, train_loss=train_loss)
            if validating:
                state.val_loss = validate(parts, data, settings)
                if logs and state.val_loss is not None:
                    logs.log(logged_step, val_loss=state.val_loss)
                if log.checkpoint:
                    save_checkpoint(run_dir, parts, state, log.save_top_k, zero)
                    saved_at = state.step
            if bar is not None:
                bar.update(1)
                if state.step % settings.log_every_n_steps == 0:
                    bar.set_postfix(train_loss=train_loss, val_loss=state.val_loss, refresh=False)
            if progress and progress.due():
                progress.write("training", state.step, settings.max_steps, train_loss, state.val_loss)
            if on_step_end is not None:
                on_step_end(state.step, validating)
            if signals.any_rank(parts.dp_size, parts.device):
                print(f"{signals.stop_now()} after step {state.step}: saving the last checkpoint, then exiting")
                break
        for row_step, train_loss in readback.drain():
            if logs:
                logs.log(row_step, train_loss=train_loss)
        if train_loss is None and done_here:  # no log step: the last step's loss (every rank: a collective on CPU)
            train_loss = float(data_parallel_mean(step.loss(outcome), parts))
        if log.checkpoint and saved_at != state.step and done_here:
            save_checkpoint(run_dir, parts, state, log.save_top_k, zero, validated=False)  # the last, as at train end
    finally:
        signals.restore(zero)
        if bar is not None:
            bar.close()
        if logs:
            logs.close()
    took = time.monotonic() - started
    if progress:
        progress.write("done", state.step, settings.max_steps, train_loss, state.val_loss)
    if not zero:
        return None
    if logs.rows == 0:
        shutil.rmtree(run_dir / "csv_logs" / f"version_{_last_version(run_dir)}", ignore_errors=True)
    return {
        "run_dir": str(run_dir.resolve()),
        "step": state.step,
        "max_steps": settings.max_steps,
        "stopped_by": signals.stopped_by,
        "train_loss": train_loss,
        "val_loss": state.val_loss,
        "renamed_from": renamed_from(run_dir),
        "train_seconds": round(took, 3),
        "cuda_graph": settings.cuda_graph,
    }


def _last_version(run_dir: Path) -> int:
    return max(int(p.name[8:]) for p in run_dir.glob("csv_logs/version_*") if p.name[8:].isdigit())


def _progress_bar(settings: TrainerSettings, start: int):
    from tqdm import tqdm

    return tqdm(total=settings.max_steps, initial=start, desc="training", unit="step", mininterval=1.0)


@torch.no_grad()
def validate(parts: Parts, data, settings: TrainerSettings) -> float | None:
    """val_loss over the validation digits (at most ``limit_val_batches`` micro-batches): each micro-batch's loss,
    averaged weighted by its size, as Lightning's epoch-level mean of a per-batch ``log`` computes it."""
    total, count = torch.tensor(0.0, device=parts.device), 0
    for index, batch in enumerate(data.megatron_batches("validation", 0, parts.dp_rank, parts.dp_size)):
        if settings.limit_val_batches is not None and index >= settings.limit_val_batches:
            break
        batch = on(parts.device, batch)
        reported = parts.forward_backward(
            forward_step_func=partial(forward_step, parts.reduction),
            data_iterator=iter([batch]),
            model=parts.model,
            num_microbatches=1,
            seq_length=1,
            micro_batch_size=data.micro_batch_size,
            forward_only=True,
        )
        size = len(batch["label"])
        total = total + parts.reduction.reduce(reported).float().mean() * size
        count += size
    if not count:  # fewer validation digits than a micro-batch (the launcher refuses that; a Python recipe may not)
        return None
    if parts.device.type == "cpu" and parts.dp_size > 1:  # Lightning's sync: the ranks' sums over their counts
        torch.distributed.all_reduce(total)
        count *= parts.dp_size
    return float(total / count)


# -- checkpoints ------------------------------------------------------------------------------------------------------
def checkpoint_name(state: RunState, last: bool) -> str:
    val = "nan" if state.val_loss is None else f"{state.val_loss:.4f}"
    return f"step={state.step}-val_loss={val}" + ("-last" if last else "")


def save_checkpoint(run_dir: Path, parts: Parts, state: RunState, top_k: int, zero: bool, validated=True) -> None:
    """The last checkpoint (replacing the previous last) and, after a validation, the best ``top_k`` by val_loss.
    Each save is marked ``-unfinished`` until complete (a resume skips a marked one), and the checkpoint it
    replaces is removed only after."""
    folder = run_dir / "checkpoints"
    keep, written = set(), None
    if validated and state.val_loss is not None and top_k > 0:
        name = checkpoint_name(state, last=False)
        best = sorted([*state.best, (state.val_loss, name)])[:top_k]
        if (state.val_loss, name) in best:
            _write(folder, name, parts, state, zero, best)
            written = name
        state.best = best
    keep |= {name for _, name in state.best}
    last = checkpoint_name(state, last=True)
    if written is not None:  # the same step's state, just saved as a best: its files again, not a second save
        _twin(folder, written, last, zero)
    else:
        _write(folder, last, parts, state, zero, state.best)
    keep.add(last)
    if zero:
        for path in folder.iterdir():
            stem = path.name.removesuffix(".ckpt")
            if stem.startswith("step=") and stem not in keep and not stem.endswith("-unfinished"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _write(folder: Path, name: str, parts: Parts, state: RunState, zero: bool, best: list) -> None:
    marker = folder / f"{name}-unfinished"
    if zero:
        folder.mkdir(parents=True, exist_ok=True)
        marker.touch()
        _remove(folder, name)  # written anew, never into a file that a twin (:func:`_twin`) may share
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    common = {"step": state.step, "consumed_samples": state.consumed_samples, "val_loss": state.val_loss,
              "best": best, "engine": "megatron"}  # fmt: skip
    if parts.device.type == "cpu":
        if zero:  # the Lightning engine's file layout: NAME.ckpt, and NAME/context beside it
            model_state = {f"module.{k}": v for k, v in parts.module.state_dict().items()}
            torch.save({"state_dict": model_state, "optimizer_states": [parts.optimizer.state_dict()], **common},
                       folder / f"{name}.ckpt")  # fmt: skip
    else:
        from megatron.core import dist_checkpointing

        weights = folder / name / "weights"
        if zero:
            weights.mkdir(parents=True)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

        strategy = TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=CHECKPOINT_WRITERS)
        dist_checkpointing.save({**_sharded(parts, is_loading=False), "run": common}, str(weights), strategy)
    if zero:
        write_context(folder / name, parts.module.config, engine="megatron")
        marker.unlink()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _twin(folder: Path, source: str, name: str, zero: bool) -> None:
    """Checkpoint ``name`` as the files of ``source``, a checkpoint of the same step and state (the best, saved just
    before; the last holds the same): hard links where the file system has them, else copies. A save is ~0.1–0.25 s
    of a GPU run's host time (benchmarks/RESULTS.md), a link microseconds. Marked ``-unfinished`` until complete,
    as a save is; neither checkpoint's files are written into afterwards (:func:`_write` removes before it writes),
    so the two stay independent: removing one leaves the other whole."""
    if zero:
        marker = folder / f"{name}-unfinished"
        marker.touch()
        _remove(folder, name)
        for suffix in (".ckpt", ""):  # the CPU's NAME.ckpt beside NAME/context; a GPU's NAME/ with weights/
            src, dst = folder / f"{source}{suffix}", folder / f"{name}{suffix}"
            if src.is_dir():
                shutil.copytree(src, dst, copy_function=_link_or_copy)
            elif src.exists():
                _link_or_copy(src, dst)
            if dst.exists():
                os.utime(dst)  # the newest -last by time is the one a resume takes
        marker.unlink()
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # no hard links here (another file system, some network mounts)
        shutil.copy2(src, dst)


def _remove(folder: Path, name: str) -> None:
    """Checkpoint ``name``'s files (``NAME.ckpt``, ``NAME/``), where a save of the same name left them."""
    (folder / f"{name}.ckpt").unlink(missing_ok=True)
    if (folder / name).is_dir():
        shutil.rmtree(folder / name)


def _sharded(parts: Parts, is_loading: bool) -> dict:
    model = parts.module.sharded_state_dict(prefix="module.", metadata=SHARDED_METADATA)
    optimizer = parts.optimizer.sharded_state_dict(model, is_loading=is_loading, metadata=SHARDED_METADATA)
    return {"model": model, "optimizer": optimizer}


def load_checkpoint(path: Path, parts: Parts) -> RunState:
    """Restore the weights, the optimizer and where the run is from a checkpoint this engine wrote."""
    if parts.device.type == "cpu":
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("engine") != "megatron":
            raise ValueError(f"{path} was written by the lightning engine: a run continues with the engine it began")
        parts.module.load_state_dict({k.removeprefix("module."): v for k, v in saved["state_dict"].items()})
        parts.optimizer.load_state_dict(saved["optimizer_states"][0])
        common = saved
    else:
        from megatron.core import dist_checkpointing

        sharded = _sharded(parts, is_loading=True)
        loaded = dist_checkpointing.load(sharded, str(path))  # with the checkpoint's common part ("run")
        parts.module.load_state_dict({k.removeprefix("module."): v for k, v in loaded["model"].items()})
        parts.optimizer.load_state_dict(loaded["optimizer"])
        use_fused_capturable_adam(parts.optimizer)  # a checkpoint of an earlier version saved foreach Adam's groups
        common = loaded["run"]
    return RunState(common["step"], common["consumed_samples"], common["val_loss"], [tuple(b) for b in common["best"]])


# -- prediction -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model, data, trainer: MegatronLoop, log: RunFolder) -> tuple[Path, dict]:
    """This rank's predictions: (run folder, {key: tensor} of the digits it predicted). Inference needs no
    schedule: each micro-batch through the model (in the recipe's precision), the seed's pass-through reduction."""
    from megatron_mnist.model.losses import PassthroughLossReduction

    settings = trainer.settings
    rank, world = init_process_group(settings, seed=defaults.SEED)
    module = model.configure_model()  # every weight from the checkpoint (api.predict skips none)
    net, device = module, torch.device("cpu")
    if settings.accelerator == "gpu":
        from megatron.core import parallel_state
        from megatron.core.transformer.module import Float16Module

        device = torch.device("cuda", torch.cuda.current_device())
        module.cuda(device)
        if settings.precision in ("bf16-mixed", "16-mixed"):
            model.bf16, model.fp16 = settings.precision == "bf16-mixed", settings.precision == "16-mixed"
            net = Float16Module(model, module)
        rank, world = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    net.eval()
    data.build("predict", 1, device)
    freeze_heap()
    reduction, outputs = PassthroughLossReduction(), []
    for batch in data.megatron_batches("predict", 0, rank, world):
        batch = on(device, batch)
        outputs.append(reduction.forward(batch, net(batch["data"]))[1])
    merged = reduction.reduce(outputs)
    # reconstructions are large and recomputable: keep what a report needs, in fp32 on the CPU
    shard = {key: (v.float() if v.is_floating_point() else v).cpu() for key, v in merged.items() if key != "x_hat"}
    run_dir = Path(log.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, shard
