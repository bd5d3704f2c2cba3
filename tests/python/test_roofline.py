"""The profiling pipeline's CPU-side parts: profiling/roofline/parse_ncu.py on a raw-page CSV in
Nsight Compute's format, profiling/roofline/generate_roofline.py on a metrics.csv (SVG and
analysis.md), its classification rule, profiling/profile_targets.py --list and the shell script's
syntax. No GPU needed."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import load_module

ROOT = Path(__file__).resolve().parents[2]




parse_ncu = load_module("fk_parse_ncu", ROOT / "profiling" / "roofline" / "parse_ncu.py")
roofline = load_module("fk_generate_roofline", ROOT / "profiling" / "roofline" / "generate_roofline.py")

NVTX = "thread Domain:Push/Pop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg"
START_STOP = "Id:Domain:Start/Stop_Range:PL_Type:PL_Value:CLR_Type:Color:Msg_Type:Msg"
LEAD = ["ID", "Process ID", "Process Name", "Host Name", NVTX, START_STOP, "Kernel Name", "Context", "Stream",
        "Block Size", "Grid Size", "Device", "CC"]
METRICS = [  # (name, unit as `--print-units base` prints it)
    ("dram__bytes_read.sum", "byte"), ("dram__bytes_write.sum", "byte"), ("gpu__time_duration.sum", "nsecond"),
    ("lts__t_bytes.sum", "byte"), ("sm__ops_path_tensor_src_bf16_dst_fp32.sum", ""),
    ("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active", "%"),
    ("sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active", "%"),
    ("sm__warps_active.avg.pct_of_peak_sustained_active", "%"),
    ("smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio", ""),
    ("smsp__average_warps_issue_stalled_gmma_per_issue_active.ratio", ""),
    ("smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio", ""),
    ("smsp__average_warps_issue_stalled_selected_per_issue_active.ratio", ""),
    ("smsp__sass_thread_inst_executed_op_fadd_pred_on.sum", "inst"),
    ("smsp__sass_thread_inst_executed_op_ffma_pred_on.sum", "inst"),
]


def _stack(*names):
    """An NVTX push/pop cell as ncu writes it: the thread, then each range outermost first."""
    return "1  " + "  ".join(f'"<default domain>:{n}:none:none:none:none:none:none"' for n in names) + " "


def _launch(i, family, kernel, dram_r, dram_w, ns, tensor_ops, gmma, hmma, occ, stalls, fadd, ffma):
    barrier, gmma_stall, long_sb = stalls
    values = [dram_r, dram_w, ns, "1,000,000", tensor_ops, gmma, hmma, occ, barrier, gmma_stall, long_sb, "1.00",
              fadd, ffma]
    return [str(i), "4242", "python3.12", "127.0.0.1", _stack("fk", family), "", kernel, "1", "7",
            "(256, 1, 1)", "(1024, 1, 1)", "0", "9.0", *values]


def raw_csv() -> str:
    """`ncu --import R.ncu-rep --csv --page raw --print-units base`: every cell quoted, a header of
    metric names, a units row, one row per launch; numbers with thousands separators."""
    rows = [LEAD + [m for m, _ in METRICS], [""] * len(LEAD) + [u for _, u in METRICS]]
    rows.append(_launch(0, "vector_add", "void vector_add_kernel<float, 4>(const float *, const float *, float *, long)",
                        "536,870,912", "268,435,456", "268,000", "0", "0", "0", "85.5", ("0.10", "0", "20.50"),
                        "67,108,864", "0"))
    rows.append(_launch(1, "attention_sm90_d128", "void flashkernel::attention::sm90::forward_kernel<128, false>(Params)",
                        "201,326,592", "67,108,864", "800,000", "549,755,813,888", "70.1", "0", "12.4",
                        ("1.00", "3.00", "0.50"), "0", "1,000,000,000"))
    prefill = [("void gemm_kernel<64>(const half *)", "100,000"), ("layernorm_kernel(const half *, int)", "5,000")]
    for i, (kernel, ns) in enumerate(prefill):
        rows.append(_launch(2 + i, "gpt2_prefill", kernel, "1,000,000", "1,000,000", ns, "0", "0", "0", "50.0",
                            ("0", "0", "1.0"), "0", "0"))
    for i, (kernel, ns) in enumerate(prefill + [("void decode_gemv_kernel<8>(const half *)", "40,000")]):
        rows.append(_launch(4 + i, "gpt2_decode", kernel, "120,000,000", "1,000", ns, "0", "0", "0", "60.0",
                            ("0", "0", "2.0"), "0", "4,000,000"))
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)  # quotes in cells doubled
    return "==PROF== Connected to process 4242 (/usr/bin/python3.12)\n==WARNING== a note ncu printed\n" + buffer.getvalue()


WORK = {
    "gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "sm_count": 132, "commit": "abc1234def56", "torch": "2.11.0",
    "flashkernel": "1.0.0",
    "hbm_gbps_theoretical": 3352.3,
    "families": {
        "vector_add": {"skipped": None, "config": "n=67108864 float32", "flops": 67108864, "bytes": 805306368,
                       "flops_kind": "fp32", "subtract": None},
        "attention_sm90_d128": {"skipped": None, "config": "B=4 H=16 N=4096 d=128", "flops": 549755813888.0,
                                "bytes": 268435456, "flops_kind": "tensor", "subtract": None},
        "gelu_linear_sm90_wide": {"skipped": "needs a Hopper GPU (compute capability 9.x); this one is 8.0"},
        "rope": {"skipped": None, "config": "B=8", "flops": 1.0e8, "bytes": 5.0e8, "flops_kind": "fp32",
                 "subtract": None},
        "gpt2_prefill": {"skipped": None, "config": "prefill", "flops": 2.0e11, "bytes": 2.5e8, "flops_kind": "fp32",
                         "subtract": None},
        "gpt2_decode": {"skipped": None, "config": "decode", "flops": 2.0e9, "bytes": 2.85e8, "flops_kind": "fp32",
                        "subtract": "gpt2_prefill"},
    },
}
EXPECT = ["vector_add", "attention_sm90_d128", "gelu_linear_sm90_wide", "rope", "paged_decode", "gpt2_prefill",
          "gpt2_decode"]


@pytest.fixture
def profiled(tmp_path):
    """A raw CSV and a work record on disk, as profile_all.sh leaves them."""
    raw = tmp_path / "all.raw.csv"
    raw.write_text(raw_csv())
    work = tmp_path / "all.work.json"
    work.write_text(json.dumps(WORK))
    return raw, work, tmp_path


def _run_parse(raw, work, out_root, *extra):
    return parse_ncu.main(["--raw", str(raw), "--work-json", str(work), "--out-root", str(out_root),
                           "--expect", ",".join(EXPECT), *extra])


def _rows(path):
    with open(path, newline="") as f:
        return {r["family"]: r for r in csv.DictReader(f)}


def test_parser_one_row_per_family(profiled):
    raw, work, tmp = profiled
    assert _run_parse(raw, work, tmp / "out", "--slug", "test-gpu") == 0
    out = tmp / "out" / "test-gpu"
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == parse_ncu.COLUMNS
        order = [r["family"] for r in reader]
    assert order == EXPECT
    rows = _rows(out / "metrics.csv")

    va = rows["vector_add"]
    assert va["kernel"] == "vector_add_kernel<…>"
    assert float(va["duration_us"]) == pytest.approx(268.0)
    assert int(va["dram_bytes"]) == 805306368 and int(va["l2_bytes"]) == 1000000
    assert int(va["flops"]) == 67108864 and va["flops_precision"] == "fp32"
    assert float(va["achieved_gbps"]) == pytest.approx(805306368 / 268e-6 / 1e9, rel=1e-3)
    assert float(va["arithmetic_intensity"]) == pytest.approx(67108864 / 805306368, rel=1e-3)
    assert float(va["occupancy_pct"]) == pytest.approx(85.5)
    assert va["top_stall"].startswith("long_scoreboard")

    att = rows["attention_sm90_d128"]
    assert att["kernel"] == "flashkernel::attention::sm90::forward_kernel<…>"
    assert att["flops_precision"] == "tensor_bf16"
    assert int(att["flops"]) == 549755813888 + 2 * 1000000000  # tensor ops + 2 per FFMA
    assert float(att["achieved_tflops"]) == pytest.approx((549755813888 + 2e9) / 800e-6 / 1e12, rel=1e-3)
    assert float(att["tensor_pipe_pct"]) == pytest.approx(70.1)  # gmma: no all-pipes counter in this report
    assert att["top_stall"] == "gmma (67%)"
    assert "counted/model FLOPs 1.00" in att["note"]

    dec = rows["gpt2_decode"]
    assert dec["kernel"] == "decode_gemv_kernel<…>"  # the prefill's launches left out
    assert float(dec["duration_us"]) == pytest.approx(40.0)
    assert "first 2 launches (the gpt2_prefill part of the call) left out" in dec["note"]
    assert float(rows["gpt2_prefill"]["duration_us"]) == pytest.approx(105.0)
    assert rows["gpt2_prefill"]["kernel"] == "gemm_kernel<…> +1 more"

    assert rows["gelu_linear_sm90_wide"]["note"].startswith("skipped: needs a Hopper GPU")
    assert rows["rope"]["note"].startswith("not profiled") and not rows["rope"]["duration_us"]
    assert rows["paged_decode"]["note"].startswith("not profiled")

    kernels = list(csv.DictReader(open(out / "kernels.csv", newline="")))
    assert len(kernels) == 7
    assert [k["counted"] for k in kernels if k["family"] == "gpt2_decode"] == ["0", "0", "1"]
    assert kernels[0]["kernel_full"].startswith("void vector_add_kernel<float, 4>(")

    run = json.loads((out / "run.json").read_text())
    assert run["gpu"] == "NVIDIA H100 80GB HBM3" and run["slug"] == "test-gpu"
    assert set(run["not_profiled"]) == {"gelu_linear_sm90_wide", "rope", "paged_decode"}
    assert run["not_profiled"]["paged_decode"].startswith("not run")
    assert "gpu__time_duration.sum" not in run["metrics_absent"]
    assert "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active" in run["metrics_absent"]
    assert run["measures_missing"] == []  # the tensor pipe through gmma/hmma, a stall reason through three of them


def test_parser_names_the_folder_as_the_benchmarks_do(profiled):
    raw, work, tmp = profiled
    assert _run_parse(raw, work, tmp / "out") == 0
    assert (tmp / "out" / "nvidia-h100-80gb-hbm3" / "metrics.csv").exists()  # bench/results/<slug>'s name


def test_parser_lists_families_to_profile_again(profiled, capsys):
    raw, work, tmp = profiled
    assert _run_parse(raw, work, tmp / "out", "--unprofiled") == 0
    assert capsys.readouterr().out.split() == ["rope", "paged_decode"]  # not the skipped one
    assert not (tmp / "out").exists()


def test_parser_units_and_missing_values(tmp_path):
    text = raw_csv().replace('"nsecond"', '"usecond"').replace('"byte","byte","usecond"', '"Mbyte","byte","usecond"')
    text = text.replace('"268,000"', '"268"').replace('"536,870,912"', '"536.870912"')
    path = tmp_path / "r.csv"
    path.write_text(text)
    launches, present, warnings = parse_ncu.read_raw(path, 0)
    assert not warnings and "gpu__time_duration.sum" in present
    va = launches[0]
    assert va.family == "vector_add"
    assert va.duration_ns == pytest.approx(268000.0)
    assert va.get("dram__bytes_read.sum") == pytest.approx(536870912.0)
    assert parse_ncu.number("n/a") is None and parse_ncu.number("1,234.5") == 1234.5


def test_tensor_counters_far_from_the_model_give_way_to_it():
    def fam(tensor_ops):
        values = {"gpu__time_duration.sum": 1e6, "dram__bytes_read.sum": 1e8, "dram__bytes_write.sum": 1e7,
                  "sm__ops_path_tensor_src_fp16_dst_fp32.sum": tensor_ops,
                  "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": 1e6}
        launch = parse_ncu.Launch("gelu_linear_sm90_wide", 0, 0, "void k<1>(int)", values)
        return parse_ncu.FamilyResult("gelu_linear_sm90_wide", [launch], [launch])

    work = {"flops": 4.0e11, "bytes": 1.1e8, "flops_kind": "tensor"}
    row = parse_ncu.summarize(fam(4.0e11), work)
    assert row["flops_precision"] == "tensor_fp16" and int(row["flops"]) == 400002000000
    row = parse_ncu.summarize(fam(2.0e11), work)  # counting multiply-adds: half
    assert row["flops_precision"] == "model:tensor" and int(row["flops"]) == 400000000000
    assert "counted/model FLOPs 0.50" in row["note"] and "its FLOPs used" in row["note"]
    row = parse_ncu.summarize(fam(2.0e11), dict(work, flops_kind="fp32"))  # only tensor work is trusted to the model
    assert row["flops_precision"] == "tensor_fp16"


def test_nvtx_family_of():
    assert parse_ncu.family_of(_stack("fk", "rope")) == "rope"
    assert parse_ncu.family_of(_stack("outer", "fk", "paged_decode")) == "paged_decode"
    assert parse_ncu.family_of('1  "<default domain>:fk/reduce_full:none:none:none:none:none:none"') == "reduce_full"
    assert parse_ncu.family_of(_stack("warmup")) is None
    assert parse_ncu.family_of("") is None
    # Innermost first, or printed without quotes: still the range next to "fk".
    assert parse_ncu.family_of(_stack("rope", "fk")) == "rope"
    assert parse_ncu.family_of(_stack("outer", "fk", "rope"), known={"outer", "rope"}) == "rope"
    assert parse_ncu.family_of("3 <default domain>:fk:none:none:none:none:none:none "
                               "<default domain>:add_rms_norm:none:none:none:none:none:none") == "add_rms_norm"


def test_short_kernel_name():
    short = parse_ncu.short_kernel_name
    assert short("void unnamed>::reduce_full_kernel<float, SumCombine>(const T1 *, long)") == "reduce_full_kernel<…>"
    assert short("void (anonymous namespace)::k<a<b>, 2>(int)") == "k<…>"
    assert short("ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_nn") == \
        "ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_nn"
    assert short("flashkernel::gpt2::decode_step(Params)") == "flashkernel::gpt2::decode_step"


def test_metric_list_keeps_what_ncu_knows(tmp_path, capsys):
    query = tmp_path / "query.txt"
    query.write_text("Device NVIDIA H100 80GB HBM3 (GH100)\n----\n"
                     "gpu__time_duration   Duration\n  dram__bytes_read   bytes read\n"
                     "sm__warps_active  warps\n")
    assert parse_ncu.main(["--print-metrics", "--available", str(query)]) == 0
    out = capsys.readouterr()
    assert out.out.strip().split(",") == ["gpu__time_duration.sum", "dram__bytes_read.sum",
                                          "sm__warps_active.avg.pct_of_peak_sustained_active"]
    assert "lts__t_bytes.sum" in out.err
    assert parse_ncu.main(["--print-metrics"]) == 0
    assert capsys.readouterr().out.strip().split(",") == parse_ncu.METRICS


# ------------------------------------------------------------------------------------ the generator
BENCH_ROWS = [  # op,impl,dtype,config,median_ms,tflops,gbps,gpu: the ceilings' sources
    ("vector_add", "device_copy", "float16", "n=1 MB=1024", "0.7", "", "3017.26"),
    ("vector_add", "device_copy", "float32", "n=2 MB=256", "0.2", "", "2950.0"),
    ("gelu_linear", "linear_only", "bfloat16", "M=512 K=4096 N=16384", "0.1", "733.305", "2000"),
    ("reduce", "flashkernel_cuda", "float32", "n=100000000", "0.1", "", "2998.68"),
    ("gelu_linear", "torch_eager", "float32", "M=1 K=1 N=1", "0.1", "999999", ""),  # not fp16/bf16: not a ceiling
]


def _bench(root: Path, slug: str, gpu: str) -> Path:
    folder = root / slug
    folder.mkdir(parents=True)
    with open(folder / "mixed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["op", "impl", "dtype", "config", "median_ms", "tflops", "gbps", "gpu", "torch", "commit"])
        for r in BENCH_ROWS:
            w.writerow([*r, gpu, "2.11.0", "abc1234"])
    return root


def test_generator_writes_svg_and_analysis(profiled):
    raw, work, tmp = profiled
    slug = "nvidia-h100-80gb-hbm3"
    assert _run_parse(raw, work, tmp / "out", "--slug", slug) == 0
    bench = _bench(tmp / "bench", slug, "NVIDIA H100 80GB HBM3")
    args = ["--slug", slug, "--root", str(tmp / "out"), "--bench-root", str(bench)]
    assert roofline.main(args) == 0
    folder = tmp / "out" / slug
    svg = (folder / "roofline_all.svg").read_text()
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    for text in ("vector_add", "attention_sm90_d128", "gpt2_decode", "NVIDIA H100 80GB HBM3", "3,017 GB/s device copy",
                 "733 TFLOP/s best fp16/bf16 benchmark row", "datasheet: 3,350 GB/s HBM"):
        assert text in svg, text
    md = (folder / "analysis.md").read_text()
    assert md.startswith("# Roofline analysis: NVIDIA H100 80GB HBM3")
    assert "Run: capability 9.0; SMs 132; commit abc1234def56; torch 2.11.0; flashkernel 1.0.0." in md
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
             for line in md.splitlines() if line.startswith("| ") and "`" in line}
    assert set(table) == {"vector_add", "attention_sm90_d128", "gpt2_prefill", "gpt2_decode"}
    assert table["vector_add"][9] == "memory-bound"          # ~3.0 TB/s of a 3.0 TB/s copy
    assert table["vector_add"][7] == "100%"
    assert table["attention_sm90_d128"][9] == "compute-bound"  # 690 of 733 TFLOP/s
    assert table["attention_sm90_d128"][5] == "94%"
    assert table["gpt2_prefill"][9] == "latency-bound"       # 19 GB/s, no FLOPs counted
    assert table["attention_sm90_d128"][13] == "gmma (67%)"
    assert "| memory, measured | 3,017 GB/s | best device_copy row (mixed.csv: device_copy float16 n=1 MB=1024) |" in md
    assert "| tensor fp16/bf16, measured | 733 TFLOP/s |" in md
    assert "| tensor fp16/bf16 dense, datasheet | 990 TFLOP/s | datasheet, NVIDIA H100 80GB HBM3" in md
    assert "- gelu_linear_sm90_wide: skipped: needs a Hopper GPU" in md
    assert "- rope: not profiled" in md
    # The same inputs give the same files.
    first = (folder / "roofline_all.svg").read_bytes()
    assert roofline.main(args) == 0
    assert (folder / "roofline_all.svg").read_bytes() == first


def test_generator_without_bench_rows_uses_the_datasheet_and_options(profiled):
    raw, work, tmp = profiled
    assert _run_parse(raw, work, tmp / "out", "--slug", "somecard") == 0
    args = ["--slug", "somecard", "--root", str(tmp / "out"), "--bench-root", str(tmp / "none")]
    assert roofline.main(args) == 0  # run.json's GPU is in the datasheet table
    md = (tmp / "out" / "somecard" / "analysis.md").read_text()
    assert "| memory, measured | — |" in md and "| memory, datasheet | 3,350 GB/s |" in md
    assert roofline.main([*args, "--peak-gbps", "1000", "--peak-tflops", "500"]) == 0
    md = (tmp / "out" / "somecard" / "analysis.md").read_text()
    assert "| memory, datasheet | 1,000 GB/s | --peak-gbps |" in md
    assert "| tensor fp16/bf16 dense, datasheet | 500 TFLOP/s | --peak-tflops |" in md
    svg = (tmp / "out" / "somecard" / "roofline_all.svg").read_text()
    assert "given: 1,000 GB/s HBM, 500 TFLOP/s dense fp16/bf16 tensor" in svg
    assert "datasheet: 67 TFLOP/s fp32 CUDA cores" in svg
    assert "measured:" not in svg  # no benchmark rows for this card
    assert roofline.main(["--slug", "absent", "--root", str(tmp / "out")]) == 2


def test_classification_rule():
    classify = roofline.classify
    assert classify(690.0, 300.0, 733.0, 3000.0) == "compute-bound"
    assert classify(0.1, 2900.0, 733.0, 3000.0) == "memory-bound"
    assert classify(None, 2500.0, None, 3000.0) == "memory-bound"     # data movement only
    assert classify(100.0, 500.0, 733.0, 3000.0) == "latency-bound"   # under 60% of both roofs
    assert classify(0.6 * 733.0, 0.0, 733.0, 3000.0) == "compute-bound"  # 60% is not latency-bound
    assert classify(0.59 * 733.0, 0.59 * 3000.0, 733.0, 3000.0) == "latency-bound"
    assert classify(None, None, None, None) == "unknown"
    assert roofline.attainable_tflops(1.0, 733.0, 3000.0) == pytest.approx(3.0)
    assert roofline.attainable_tflops(1e4, 733.0, 3000.0) == pytest.approx(733.0)


# ------------------------------------------------------------------------------ the target program
def _targets(*args, env=None):
    # From the checkout's root, where the op library is found without FLASHKERNEL_LIB_DIR too.
    return subprocess.run([sys.executable, str(ROOT / "profiling" / "profile_targets.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


def test_profile_targets_list():
    r = _targets("--list")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    for name in ("vector_add", "reduce_full", "reduce_rows", "attention_sm80_d64", "attention_sm90_d128_causal",
                 "gelu_linear_sm90_wide", "gelu_linear_sm90_mid", "gelu_linear_sm90_narrow", "gelu_linear_sm90_pingpong",
                 "gelu_linear_small_m", "rope", "add_layernorm", "add_rms_norm", "kv_cache_append", "kv_cache_gather",
                 "paged_decode", "gpt2_decode"):
        assert name in names
    assert len(names) == len(set(names))
    r = _targets("--list", "--only", "gpt2_decode,vector_add")
    assert r.stdout.split() == ["vector_add", "gpt2_prefill", "gpt2_decode"]  # with what it needs, in order
    r = _targets("--list", "--only", "no_such_family")
    assert r.returncode == 2 and "unknown family no_such_family" in r.stderr


def test_profile_targets_without_gpu_says_so(tmp_path):
    # The GPU is hidden from the child process, so this runs (and can fail) on GPU machines too.
    r = _targets("--only", "vector_add", "--work-json", str(tmp_path / "w.json"),
                 env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr
    assert not (tmp_path / "w.json").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_profile_all_script_parses():
    r = subprocess.run(["bash", "-n", str(ROOT / "profiling" / "profile_all.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
