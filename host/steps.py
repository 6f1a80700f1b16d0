"""A program in external memory: its DDR image and step lists (DESIGN §4, §6; memory system).

On a device with DDR (the PCIe device: the regmap has ``regions["ddr"]``), the host puts the
program and each input into DDR (XDMA h2c) and the accelerator does the rest from a step list
(:data:`nibble.hw.isa.STEP`): its DMA loads the images into the on-chip memories, the engine runs
the descriptors, the DMA stores the outputs back, and the host reads them from DDR (c2h) — the
data path of a board, where the XDMA endpoint writes DDR behind the MIG.

:func:`plan_ddr` lays the program out and writes two lists:

* the **load list**, run once by :meth:`nibble.host.driver.Device.load`: LOAD the parameter image
  (descriptors, biases, slopes) and, for a program whose weights fit, the weight image;
* the **run list**, run for every input: LOAD each input map into feature memory, RUN, STORE
  each output map, END.

**Weight streaming** (``Program.stream_weights``, TF2's double-buffered filter loading): the
weight image stays in DDR; descriptor ``i`` runs alone (its ``last`` flag set) with its weights
in half ``i mod 2`` of weight memory (its ``w_base`` rewritten), and the LOAD of descriptor
``i + 1``'s weights into the other half is issued right after RUN ``i``, so it proceeds while
``i`` computes; RUN ``i + 1`` waits for both (``wait``). The engine is then stalled on memory
only where a descriptor's weights take longer to load than the one before takes to compute —
the ``engine_cycles`` CSR measures it.

Layout in DDR, from the window's base, each part at a 4 KiB boundary: load list, run list,
parameter image, weight image (each streamed descriptor's weights at a beat boundary), inputs,
outputs. Feature maps in DDR have their on-chip layout (HWC, ``vc`` int8 a beat), so a map is
one chunk.
"""
import dataclasses

import numpy as np

from ..hw.isa import (DESC_WORDS, STEP_BYTES, STEP_CHUNK, Region, StepOp, decode_descriptor, encode_descriptor,
                      encode_step)
from .program import Program

__all__ = ["DdrPlan", "plan_ddr", "PART_ALIGN"]

CHUNK_STEPS = STEP_CHUNK
#: Alignment of each part of the DDR layout, bytes.
PART_ALIGN = 4096


@dataclasses.dataclass
class DdrPlan:
    """Where a program lives in DDR and the lists that run it (AXI byte addresses).

    ``image``: ``[(addr, bytes)]`` the host writes at load; ``load_list``, ``run_list``: byte
    addresses of the lists; ``inputs``: ``[(addr, nbytes)]`` per program input, ``outputs`` the
    same per output; ``run_steps``: the steps of the run list, END included (the ``steps`` CSR
    after a good run); ``runs``: ``{step index: descriptor index}`` of the RUN steps; ``end``: the
    first byte after the layout.
    """
    image: list
    load_list: int
    run_list: int
    inputs: list
    outputs: list
    run_steps: int
    load_steps: int
    runs: dict
    end: int


def _align(n, a=PART_ALIGN):
    return -(-n // a) * a


def _list(steps):
    raw = b"".join(encode_step(op, **f) for op, f in steps)
    return raw + encode_step(StepOp.END) * (-len(steps) % CHUNK_STEPS)


def plan_ddr(program: Program, regmap) -> DdrPlan:
    """Lay ``program`` out in the DDR window of ``regmap`` and write its lists (module docstring).

    :raises ValueError: the regmap has no DDR window; the layout does not fit it; a map or image
        that cannot be copied in whole beats within its memory (naming it).
    """
    if "ddr" not in regmap["regions"]:
        raise ValueError("the device has no external memory (its regmap has no 'ddr' region)")
    ddr = regmap["regions"]["ddr"]
    c = program.config
    vc = c.vc
    beat = ddr["beat_bits"] // 8
    if beat != vc:
        raise ValueError(f"the device's DDR beat is {beat} bytes, the program's feature word {vc}")
    base, size = ddr["base"], ddr["bytes"]
    pw_beat = beat // 4                 # parameter words per beat
    ww_bytes = vc // 2                  # bytes per weight word (vc 4-bit codes)
    n_desc = len(program.layers)

    params = program.params.astype("<u4").copy()
    if program.stream_weights:
        half = c.weight_depth // 2
        for i in range(n_desc):
            at = program.desc_base + DESC_WORDS * i
            d = decode_descriptor(params[at:at + DESC_WORDS])
            d.pop("magic")
            d.update(w_base=(i % 2) * half, last=1)
            params[at:at + DESC_WORDS] = encode_descriptor(**d)
    n_params = -(-len(params) // pw_beat) * pw_beat
    if n_params > c.param_depth:
        raise ValueError(f"the parameter image ({len(params)} words) padded to whole DDR beats ({n_params}) "
                         f"exceeds the parameter memory ({c.param_depth} words)")
    params = np.concatenate([params, np.zeros(n_params - len(params), "<u4")])
    weights = program.weights.astype("<u2").tobytes()

    # sizes of the parts, then addresses
    wbytes_per = lambda L: L.n_coblk(c.m) * c.m * L.kh * L.kw * L.cb_in * ww_bytes
    if program.stream_weights:
        blobs, off = [], 0
        for L in program.layers:
            n = wbytes_per(L)
            blobs.append((off, weights[L.w_base * ww_bytes:L.w_base * ww_bytes + n]))
            off += _align(n, beat)
        w_image_bytes = off
    else:
        w_image_bytes = _align(len(weights), beat)
        if w_image_bytes // ww_bytes > c.weight_depth:
            raise ValueError(f"the weight image ({len(weights) // ww_bytes} words) padded to whole DDR beats "
                             f"exceeds the weight memory ({c.weight_depth} words)")
    in_bytes = [spec.words(vc) * vc for spec in program.inputs]
    out_bytes = [spec.words(vc) * vc for spec in program.outputs]
    n_run = len(program.inputs) + len(program.outputs) + 1 + (2 * n_desc if program.stream_weights else 1)
    list_bytes = lambda n: _align(n, CHUNK_STEPS) * STEP_BYTES

    at = base
    load_list = at
    at += _align(list_bytes(3))
    run_list = at
    at += _align(list_bytes(n_run))
    params_at = at
    at += _align(n_params * 4)
    weights_at = at
    at += _align(w_image_bytes)
    inputs = []
    for n in in_bytes:
        inputs.append((at, n))
        at += _align(n)
    outputs = []
    for n in out_bytes:
        outputs.append((at, n))
        at += _align(n)
    if at > base + size:
        raise ValueError(f"the program and its maps need {at - base} bytes of DDR, the window has {size}")

    copy = lambda op, region, mem_addr, words, ddr_addr, wait=0: (op, dict(
        region=region, mem_addr=mem_addr, count=1, words=words, mem_stride=0, ddr_addr=ddr_addr, ddr_stride=0,
        wait=wait))
    load = [copy(StepOp.LOAD, Region.PARAM, 0, n_params, params_at)]
    image = [(params_at, params.tobytes())]
    if program.stream_weights:
        image += [(weights_at + off, blob) for off, blob in blobs]
    else:
        load.append(copy(StepOp.LOAD, Region.WEIGHT, 0, w_image_bytes // ww_bytes, weights_at))
        image.append((weights_at, weights + bytes(w_image_bytes - len(weights))))
    load.append((StepOp.END, {}))

    run = []
    for spec, (addr, n) in zip(program.inputs, inputs):
        run.append(copy(StepOp.LOAD, Region.FEATURE, spec.base, n // vc, addr))
    runs = {}
    if program.stream_weights:
        half = c.weight_depth // 2
        words = [-(-wbytes_per(L) // beat) * beat // ww_bytes for L in program.layers]
        for i in range(n_desc):
            if words[i] > half:
                raise ValueError(f"descriptor {i} ('{program.layers[i].name}'): its weights padded to whole "
                                 f"DDR beats ({words[i]} words) exceed half of the weight memory ({half})")
        run.append(copy(StepOp.LOAD, Region.WEIGHT, 0, words[0], weights_at + blobs[0][0]))
        for i in range(n_desc):
            runs[len(run)] = i
            run.append((StepOp.RUN, dict(mem_addr=program.desc_base + DESC_WORDS * i, wait=1)))
            if i + 1 < n_desc:
                run.append(copy(StepOp.LOAD, Region.WEIGHT, ((i + 1) % 2) * half, words[i + 1],
                                weights_at + blobs[i + 1][0]))
    else:
        runs[len(run)] = 0
        run.append((StepOp.RUN, dict(mem_addr=program.desc_base, wait=1)))
    for spec, (addr, n) in zip(program.outputs, outputs):
        run.append(copy(StepOp.STORE, Region.FEATURE, spec.base, n // vc, addr, wait=1))
    run.append((StepOp.END, {}))
    assert len(run) == n_run
    image += [(load_list, _list(load)), (run_list, _list(run))]
    return DdrPlan(image=image, load_list=load_list, run_list=run_list, inputs=inputs, outputs=outputs,
                   run_steps=len(run), load_steps=len(load), runs=runs, end=at)
