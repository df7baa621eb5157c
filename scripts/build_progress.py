"""Turn a verbose llama.cpp wheel build (pip -v) into a progress line; keep errors visible.

    pip wheel -v ... 2>&1 | python scripts/build_progress.py LOG

Every line goes to LOG. On a terminal one line moves in place, `compiling [87/193] 45% 1m52s`;
to a pipe or file one such line is printed per 10%. The build's own steps ("Configuring
CMake...") are shown. From the first sign of failure on, everything is shown as it comes:
the compiler's message is what the reader needs then. Ninja counts `[n/m]`, make `[ 42%]`;
both are read.
Standard library only: it runs before anything else is installed.
"""

import re
import sys
import time

NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\]")
MAKE = re.compile(r"^\s*\[\s*(\d+)%\]")
STEP = re.compile(r"^\s*\*\*\* (.+)")
TROUBLE = re.compile(
    r"^\s*(FAILED:|ERROR|CMake Error|ninja: build stopped|make(\[\d+\])?: \*\*\*)|\berror:"
)
DONE = re.compile(r"^\s*(Successfully built|Saved )")


class Progress:
    def __init__(self, out, *, live: bool) -> None:
        self.out = out
        self.live = live
        self.start = time.monotonic()
        self.shown_step = -1  # the last 10% step printed (not live)
        self.line_open = False  # live: a progress line without its newline yet

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.start)
        return f"{seconds // 60}m{seconds % 60:02d}s"

    def update(self, percent: int, count: str) -> None:
        text = f"  compiling {count:>9} {percent:3d}%  {self._elapsed()}"
        if self.live:
            self.out.write(f"\r{text}")
            self.line_open = True
        elif percent // 10 > self.shown_step:
            self.shown_step = percent // 10
            self.out.write(f"{text}\n")
        self.out.flush()

    def say(self, line: str) -> None:
        if self.line_open:
            self.out.write("\n")
            self.line_open = False
        self.out.write(f"{line}\n")
        self.out.flush()


def main(log_path: str) -> int:
    progress = Progress(sys.stdout, live=sys.stdout.isatty())
    failing = False
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        for raw in sys.stdin:
            log.write(raw)
            log.flush()
            line = raw.rstrip("\n")
            if failing:
                progress.say(line)
                continue
            if ninja := NINJA.match(line):
                done, total = int(ninja[1]), int(ninja[2])
                progress.update(100 * done // max(total, 1), f"[{done}/{total}]")
            elif make := MAKE.match(line):
                progress.update(int(make[1]), "")
            elif TROUBLE.search(line):
                failing = True
                progress.say(line)
            elif (step := STEP.match(line)) and not step[1].startswith("scikit-build-core"):
                progress.say(f"  {step[1]}")
            elif DONE.match(line):
                progress.say(f"  {line.strip()}")
    if progress.line_open:
        progress.say("")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
