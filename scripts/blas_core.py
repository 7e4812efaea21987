"""Which OpenBLAS kernel a Python peer runs, and the best one this CPU supports.

Debian's OpenBLAS (0.3.21) is built with DYNAMIC_ARCH: it picks its kernels
("core") from the CPU's family and model when it loads. A CPU newer than the
release is not recognised and gets an old SSE3 kernel (Prescott): on an Intel
Xeon of family 6 model 207, or AMD's Zen 5, a 2048x2048 product ran 4 times
slower than with OPENBLAS_CORETYPE=SkylakeX, with the same results. A peer
timed that way says nothing about the other engine.

Every peer or comparison script calls, in this order:

  set_threads(n)             as it starts: the thread pools' sizes, read by
                             OpenMP and OpenBLAS when they load
  pin_best_openblas_core()   then, after its thread variables are set
                             (the OpenBLAS it loads is the one torch will use,
                             and it reads them when it loads) and before torch
                             is imported
  blas_report(torch)         after torch is imported: the figures' BLAS facts
                             for the JSON, and a float32 product checked
                             against float64 (exits when it is wrong)

The best core this CPU supports, from the flags in /proc/cpuinfo (Linux only;
elsewhere nothing is done):
  SkylakeX  AVX-512 F, BW, DQ, VL and CD (any vendor: these are the AVX-512
            kernels; OpenBLAS 0.3.21 as Debian builds it answers "Core not
            found" to CooperLake, whose single-precision kernels are
            SkylakeX's anyway)
  Zen       AVX2 and FMA on AMD or Hygon
  Haswell   AVX2 and FMA on other vendors
  (none)    otherwise: nothing is pinned
A core "falls short" when its kernels use a narrower instruction set than the
best (Prescott, Core2, Nehalem, Barcelona: SSE; Sandybridge, Bulldozer..
Excavator: AVX; Haswell, Zen: AVX2; SkylakeX: AVX-512). Haswell on an AMD
AVX2 CPU does not fall short: same instructions, and OpenBLAS's Zen kernels
are largely Haswell's.

To learn what OpenBLAS picks, it is loaded here through ctypes, found as the
dynamic loader finds it for torch (libblas.so.3, which Debian's alternatives
point at openblas-pthread/libblas.so.3, then libopenblas.so.0), and asked
(openblas_get_corename). Loading it fixes its core for this process, so when
a pin is needed the interpreter is started again (os.execv, same arguments,
same process id) with OPENBLAS_CORETYPE set and a marker (PROMPTIQA_BLAS_PIN:
"<pid>:<core OpenBLAS chose>:<the caller's OPENBLAS_CORETYPE>") that says
what was replaced; the marker holds the process id, so a child process that
inherits it is not taken for a pinned one.

The caller's OPENBLAS_CORETYPE, and --blas-core (add_argument):
  auto  (default) a core that falls short is replaced by the best, whether
        OpenBLAS detected it or the caller's OPENBLAS_CORETYPE named it (a
        benchmark peer must not run crippled because of a variable set for
        other programs), and so is a caller's core that needs instructions
        this CPU lacks (it would die on an illegal instruction); the JSON
        keeps the caller's value (blas_core_env) and a line on stderr says
        what was replaced. A caller's core that does not fall short is kept.
  keep  whatever OpenBLAS chose is kept (a warning on stderr where it falls
        short): to time the crippled peer on purpose
  NAME  that core (e.g. Haswell), unless it needs instructions this CPU lacks
        (then the script stops: such a kernel dies on an illegal instruction)

A torch that brings its own BLAS (pip's wheels link MKL into torch) is not
pinned: blas_report then says which library ran, with no core.
"""

import ctypes
import os
import sys

CORETYPE_VAR = "OPENBLAS_CORETYPE"
MARK_VAR = "PROMPTIQA_BLAS_PIN"
CHOICES_HELP = ("OpenBLAS kernel: auto (default: the best this CPU supports where OpenBLAS's "
                "choice falls short), keep (OpenBLAS's choice as is), or a core name (e.g. Haswell)")

# A float32 product of n=512 against float64, each entry's error over the same
# entry of |A|@|B|: a correct float32 product, in any order of summation, with
# or without FMA, stays under n * 2^-24 = 3.1e-5 (the classic bound; OpenBLAS
# gives 2e-7 here), so that bound is the tolerance. A product of inputs rounded
# to half precision (as TF32 would) gives 9e-5, one scaled by 1.001 3e-4, and a
# kernel that drops a block of the sum 5e-2.
GEMM_CHECK_SIZE = 512
GEMM_TOLERANCE = GEMM_CHECK_SIZE * 2.0 ** -24

# OpenBLAS's x86-64 cores by the widest instruction set their kernels use
_CORE_LEVELS = {
    1: ("Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom", "Core2", "Penryn",
        "Dunnington", "Nehalem", "Athlon", "Opteron", "Opteron_SSE3", "Barcelona", "Nano", "Bobcat"),
    2: ("Sandybridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator"),
    3: ("Haswell", "Zen"),
    4: ("SkylakeX", "CooperLake", "SapphireRapids"),
}
LEVEL = {name.lower(): level for level, names in _CORE_LEVELS.items() for name in names}
ISA = {1: "SSE", 2: "AVX", 3: "AVX2", 4: "AVX-512"}
AVX512 = ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(threads):
    """Sizes torch's OpenMP pool and the BLAS's own pool (Debian's torch calls the
    pthread OpenBLAS, whose pool is separate) before they load, whatever the
    caller's environment said; OpenBLAS's idle workers sleep after 2^4 cycles
    instead of spinning for 2^28 (about 0.1 s), which took the cores from torch's
    OpenMP threads between products."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"


def log(msg):
    print(f"[blas_core] {msg}", file=sys.stderr, flush=True)


def level(core):
    """The instruction-set level of a core name (0: unknown or not x86)."""
    return LEVEL.get((core or "").lower(), 0)


def cpu_info(path="/proc/cpuinfo"):
    """{"vendor", "model", "flags"} of the first processor in /proc/cpuinfo, or None without it."""
    try:
        with open(path, encoding="utf8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return {
        "vendor": fields.get("vendor_id", ""),
        "model": fields.get("model name", ""),
        "flags": set(fields.get("flags", "").split()),
    }


def best_core(info):
    """The best OpenBLAS core for a CPU (cpu_info's dict), or None where no pin applies."""
    if info is None:
        return None
    flags = info["flags"]
    if all(f in flags for f in AVX512):
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Zen" if info["vendor"] in ("AuthenticAMD", "HygonGenuine") else "Haswell"
    return None


def load_openblas():
    """The OpenBLAS the dynamic loader gives for torch's BLAS, loaded, or None."""
    for name in ("libblas.so.3", "libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "openblas_get_corename"):  # dlsym also searches libblas.so.3's own dependencies
            return lib
    return None


def corename(lib):
    """The core OpenBLAS runs in this process."""
    get = lib.openblas_get_corename
    get.restype = ctypes.c_char_p
    return get().decode()


def read_choice(argv):
    """--blas-core's value in argv (auto when absent)."""
    for i, a in enumerate(argv):
        if a == "--blas-core" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--blas-core="):
            return a.split("=", 1)[1]
    return "auto"


def add_argument(parser):
    """Declares --blas-core on a script's parser (pin_best_openblas_core reads it before the parser runs)."""
    parser.add_argument("--blas-core", default="auto", metavar="auto|keep|CORE", help=CHOICES_HELP)


def read_mark():
    """(core OpenBLAS chose, the caller's OPENBLAS_CORETYPE or None) when this process was restarted to pin, else None."""
    parts = os.environ.get(MARK_VAR, "").split(":")
    if len(parts) != 3 or parts[0] != str(os.getpid()):
        return None
    return parts[1], parts[2] or None


def pin_best_openblas_core(argv=None):
    """Restarts this script with the best OpenBLAS core where OpenBLAS's choice falls short (see the module's text).

    argv: the script's arguments, read for --blas-core (default sys.argv[1:]).
    Returns only when no restart is needed.
    """
    choice = read_choice(sys.argv[1:] if argv is None else argv)
    if read_mark() is not None:
        return  # restarted with the pin already
    os.environ.pop(MARK_VAR, None)  # a parent's marker
    info = cpu_info()
    best = best_core(info)
    if info is None:
        return
    lib = load_openblas()
    if lib is None:
        return
    chosen = corename(lib)
    caller = os.environ.get(CORETYPE_VAR)
    why = f"OPENBLAS_CORETYPE={caller}" if caller is not None else "its own detection"
    short = best is not None and level(chosen) < level(best)
    # a caller's core beyond this CPU (SkylakeX without AVX-512) dies on its first illegal instruction
    beyond = best is not None and level(chosen) > level(best)
    if choice == "keep":
        if short:
            log(f"warning: OpenBLAS runs its {chosen} kernels ({why}; {ISA.get(level(chosen), '?')}) on a CPU "
                f"that supports {best} ({ISA[level(best)]}); kept as asked (--blas-core keep)")
        return
    if choice == "auto":
        target = best if short or beyond else None
    else:
        if level(choice) == 0:
            sys.exit(f"--blas-core {choice}: not an OpenBLAS x86-64 core name "
                     f"(known: {', '.join(sorted(n for names in _CORE_LEVELS.values() for n in names))})")
        if best is None or level(choice) > level(best):
            sys.exit(f"--blas-core {choice}: this CPU ({info['model'] or 'unknown'}) lacks its "
                     f"{ISA[level(choice)]} instructions (best: {best or 'none of the AVX2 or AVX-512 cores'})")
        target = choice if choice.lower() != chosen.lower() else None
    if target is None:
        return
    log(f"OpenBLAS chose its {chosen} kernels ({why}) on {info['model'] or 'this CPU'}; "
        f"restarting with OPENBLAS_CORETYPE={target}")
    os.environ[CORETYPE_VAR] = target
    os.environ[MARK_VAR] = f"{os.getpid()}:{chosen}:{caller or ''}"
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps the interpreter's own options (-u, -X ...); Python < 3.10 has only argv
    args = sys.orig_argv[1:] if hasattr(sys, "orig_argv") else sys.argv
    os.execv(sys.executable, [sys.executable] + list(args))


def loaded_blas():
    """The BLAS shared library this process loaded (from /proc/self/maps): its path,
    "built in" when none is loaded (MKL linked into torch), None without /proc."""
    try:
        with open("/proc/self/maps", encoding="utf8") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower()}
    except OSError:
        return None
    for lib in sorted(libs):
        real = os.path.realpath(lib)
        if "openblas" in real.lower() or "mkl" in real.lower():
            return real
    return os.path.realpath(sorted(libs)[0]) if libs else "built in"


def blas_threads(lib):
    """OpenBLAS's own thread count (it ignores torch.set_num_threads), or None."""
    if lib is None:
        return None
    try:
        get = ctypes.CDLL(lib).openblas_get_num_threads  # the copy already loaded
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_int
    return get()


def gemm_check(torch, mm=None, n=GEMM_CHECK_SIZE):
    """The largest error of a float32 product (torch.mm, or mm) of two random n x n
    matrices against float64, each entry's error over that entry of |A|@|B|."""
    gen = torch.Generator().manual_seed(0)  # leaves the global generator alone
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    c = (mm or torch.mm)(a, b).double()
    a64, b64 = a.double(), b.double()
    exact = a64 @ b64
    scale = a64.abs() @ b64.abs()
    return float(((c - exact).abs() / scale).max())


def blas_report(torch, mm=None):
    """The BLAS facts for a peer's JSON, after torch is imported:

      blas                the BLAS library loaded (path)
      blas_core           the OpenBLAS core in use (None: not OpenBLAS)
      blas_core_detected  the core OpenBLAS chose when it loaded, before any pin:
                          its own detection, or the caller's OPENBLAS_CORETYPE
      blas_core_env       the caller's OPENBLAS_CORETYPE (None: not set)
      blas_core_pinned    whether this process was restarted with another core
      blas_check          gemm_check's error (exits above GEMM_TOLERANCE: a kernel
                          that computes wrong products must not be timed)

    mm: the product to check (default torch.mm; tests give a wrong one).
    """
    path = loaded_blas()
    core = None
    if path not in (None, "built in") and "openblas" in path.lower():
        try:
            core = corename(ctypes.CDLL(path))
        except (OSError, AttributeError):
            core = None
    mark = read_mark()
    if mark is not None:
        detected, caller = mark
        requested = os.environ.get(CORETYPE_VAR, "")
        if core is not None and core.lower() != requested.lower():
            log(f"warning: OPENBLAS_CORETYPE={requested} was not taken: OpenBLAS runs {core}")
    else:
        detected, caller = core, os.environ.get(CORETYPE_VAR)
    check = gemm_check(torch, mm)
    if not check <= GEMM_TOLERANCE:  # also catches NaN
        sys.exit(f"[blas_core] the BLAS ({path}, core {core}) computes a {GEMM_CHECK_SIZE}x{GEMM_CHECK_SIZE} "
                 f"float32 product with relative error {check:.2e} against float64 (at most "
                 f"{GEMM_TOLERANCE:.1e}, the bound of a correct float32 product): its figures would be timing wrong results")
    return {
        "blas": path,
        "blas_core": core,
        "blas_core_detected": detected if core is not None else None,
        "blas_core_env": caller,
        "blas_core_pinned": mark is not None,
        "blas_check": check,
    }
