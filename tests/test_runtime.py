"""enoc.runtime.run: how a long-lived command ends on SIGINT."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time
    from enoc.runtime import run, stop_event

    async def main() -> int:
        stop = stop_event()
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: a clean stop
        await asyncio.wait_for(stop.wait(), 10)
        return 3

    code = run(main)
    print("returned", code, flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # the second, after the loop closed
    time.sleep(10)
    print("still running", flush=True)
    sys.exit(99)
    """
)


def test_a_sigint_after_a_clean_stop_ends_with_the_commands_own_code() -> None:
    """The second SIGINT that `uv run` forwards 200 ms after the first (or a second Ctrl-C)
    must not raise KeyboardInterrupt once the command's work is done: the process ends at
    once with the code the command returned, not 130 or a traceback."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["returned 3"]
    assert "KeyboardInterrupt" not in done.stderr


def test_a_sigint_before_the_command_returned_still_interrupts() -> None:
    """Without a handler of the command's own, Ctrl-C keeps its meaning: KeyboardInterrupt."""
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        from enoc.runtime import run

        async def main() -> int:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(10)
            return 0

        try:
            run(main)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "interrupted", done.stderr
