"""scripts/build_progress.py: the llama.cpp compile shows a moving count and keeps errors."""

import subprocess
import sys

from arena.tests.servers import ROOT

SCRIPT = ROOT / "scripts" / "build_progress.py"
HEAD = [
    "Collecting llama-cpp-python==0.3.36",
    "  Running command Building wheel for llama-cpp-python (pyproject.toml)",
    "  *** scikit-build-core 1.1.2 using CMake 3.25.1 (wheel)",
    "  *** Configuring CMake...",
    "  -- The C compiler identification is GNU 12.2.0",
    "  -- Warning: ccache not found - consider installing it",
    "  *** Building project with Ninja...",
]


def ninja(total: int, upto: int) -> list[str]:
    return [
        f"  [{n}/{total}] /usr/bin/g++ -O3 -c src/file{n}.cpp -o file{n}.o"
        for n in range(1, upto + 1)
    ]


def run(lines: list[str], tmp_path) -> tuple[str, str]:
    log = tmp_path / "build.log"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(log)],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout, log.read_text()


def test_a_piped_build_prints_its_steps_and_one_line_per_tenth(tmp_path):
    lines = [*HEAD, *ninja(193, 193), "  *** Making wheel...", "Saved ./llama_cpp_python.whl"]
    shown, log = run(lines, tmp_path)
    counts = [line.split()[1] for line in shown.splitlines() if line.startswith("  compiling")]
    assert counts == [
        "[1/193]", "[20/193]", "[39/193]", "[58/193]", "[78/193]", "[97/193]", "[116/193]",
        "[136/193]", "[155/193]", "[174/193]", "[193/193]",
    ]  # fmt: skip
    assert "  Configuring CMake..." in shown and "  Making wheel..." in shown
    assert "Saved ./llama_cpp_python.whl" in shown
    assert "g++" not in shown and "ccache" not in shown and "scikit-build-core" not in shown
    assert log == "\n".join(lines) + "\n", "the log keeps every line"


def test_make_style_percentages_are_read_too(tmp_path):
    shown, _ = run([f"[ {p:2d}%] Building CXX object x{p}.o" for p in range(0, 101, 5)], tmp_path)
    assert [line.split()[1] for line in shown.splitlines()] == [f"{p}%" for p in range(0, 101, 10)]


def test_a_failing_compile_shows_the_compilers_message_and_everything_after(tmp_path):
    failure = [
        "FAILED: vendor/llama.cpp/src/llama.o",
        "/usr/bin/g++ -O3 -c llama.cpp -o llama.o",
        "llama.cpp:12:5: error: 'foo' was not declared in this scope",
        "   12 |     foo();",
        "ninja: build stopped: subcommand failed.",
        "  ERROR: Failed building wheel for llama-cpp-python",
    ]
    shown, _ = run([*HEAD, *ninja(193, 50), *failure], tmp_path)
    assert shown.endswith("\n".join(failure) + "\n")
    assert "[39/193]" in shown and "[50/193]" not in shown
