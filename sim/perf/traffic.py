"""External-memory (DDR) traffic of a program run from a step list, counted from the list itself.

A device with external memory runs a program from the step list :func:`nibble.host.steps.plan_ddr`
writes (the sequencer, ``hw/sequencer.py``; the tile DMA, ``hw/mem/dma.py``). Its bytes, per
image:

* read: the step list's chunks — the sequencer fetches :data:`~nibble.hw.isa.STEP_CHUNK` steps of
  :data:`~nibble.hw.isa.STEP_BYTES` at a time up to the chunk that holds the END — and every
  LOAD's ``count`` chunks of ``words`` region words (feature maps, weights, biases and band
  descriptors);
* written: every STORE's ``count`` chunks of ``words`` feature words;

each chunk as the DDR beats of ``beat_bits`` that cover it (:func:`nibble.hw.mem.dma.chunk_beats`:
whole beats of :func:`~nibble.hw.mem.dma.words_per_beat` words, and a feature chunk that starts
or ends inside a beat counts that whole beat, as the bus moves it). These are the quantities the ``dma_rd_bytes`` and
``dma_wr_bytes`` CSRs count on the RTL (checked equal in ``tests/test_ddr_rtl.py`` through the
network bench). The host's own DMA of the input and output (XDMA h2c/c2h) is not part of a run.
"""
from ...hw.isa import STEP_BYTES, STEP_CHUNK, Region, StepOp

__all__ = ["run_traffic", "program_traffic"]


def run_traffic(plan, config):
    """DDR bytes of one run of ``plan`` (a :class:`~nibble.host.steps.DdrPlan`) on ``config``:
    ``{"read_bytes", "write_bytes", "step_bytes", "load_bytes": {region: bytes}}`` (ints;
    ``read_bytes`` = ``step_bytes`` + the loads; regions ``"param"``, ``"weight"``,
    ``"feature"``).

    :raises ValueError: a plan without its run steps (``plan.run`` empty), or a copy that is not
        whole beats (the sequencer would refuse it).
    """
    from ...hw.mem.dma import chunk_beats, words_per_beat
    if not plan.run:
        raise ValueError("the DDR plan carries no run steps (plan.run is empty)")
    beat = config.beat_bits // 8               # bytes per DDR beat
    chunks = -(-len(plan.run) // STEP_CHUNK)
    res = {"step_bytes": chunks * STEP_CHUNK * STEP_BYTES, "write_bytes": 0,
           "load_bytes": {r.name.lower(): 0 for r in Region}}
    for i, (op, f) in enumerate(plan.run):
        if op not in (StepOp.LOAD, StepOp.STORE):
            continue
        per = words_per_beat(config, f["region"])
        if f["region"] != Region.FEATURE and f["words"] % per:
            raise ValueError(f"step {i}: {f['words']} words of region {Region(f['region']).name} are not whole "
                             f"beats of {per} words")
        if f["region"] == Region.FEATURE and f["count"] > 1 and f["ddr_stride"] % beat == 0:
            n = f["count"] * chunk_beats(config, f["region"], f["ddr_addr"], f["words"]) * beat
        else:
            n = sum(chunk_beats(config, f["region"], f["ddr_addr"] + k * f["ddr_stride"], f["words"])
                    for k in range(f["count"])) * beat
        if op == StepOp.LOAD:
            res["load_bytes"][Region(f["region"]).name.lower()] += n
        else:
            res["write_bytes"] += n
    res["read_bytes"] = res["step_bytes"] + sum(res["load_bytes"].values())
    return res


def program_traffic(program):
    """:func:`run_traffic` of ``program`` laid out as a device with external memory would
    (:func:`~nibble.host.steps.plan_ddr` with the register map of its configuration); all zeros
    for a program that keeps everything on chip (neither ``stream_weights`` nor maps in DDR: its
    run moves nothing through DDR).

    :raises ValueError: as :func:`~nibble.host.steps.plan_ddr` (the layout does not fit the DDR
        window, a plan that cannot be banded …).
    """
    if not (program.stream_weights or program.feature_space):
        return {"read_bytes": 0, "write_bytes": 0, "step_bytes": 0, "load_bytes": {r.name.lower(): 0 for r in Region}}
    from ...hw.accelerator import regmap
    from ...host.steps import plan_ddr
    return run_traffic(plan_ddr(program, regmap(program.config, ddr=True)), program.config)
