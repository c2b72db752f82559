"""Progress written to a file or pipe is whole lines (retab.misc.progress), a bar only on a terminal."""
import io

from retab.misc.progress import LineProgress, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_every_interval_and_at_the_end():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(None, total=5, desc="evaluating", stream=out, every_s=10, clock=clock)
    for step in range(5):
        clock.now += 4  # 4 s a picture: a line at the 3rd (12 s) and 6th; the end closes with one
        bar.update()
    bar.set_postfix(loss="0.25")
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert out.getvalue() == ("evaluating: 3/5 in 12 s (0.25/s)\n"
                              "evaluating: 5/5 in 20 s (0.25/s), loss 0.25\n")
    assert "\r" not in out.getvalue()


def test_iterating_passes_items_and_a_transient_bar_leaves_no_final_line():
    out = io.StringIO()
    assert list(LineProgress(range(3), desc="x", leave=False, stream=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    out = io.StringIO()
    assert list(LineProgress(range(3), desc="x", stream=out, clock=lambda: 1.0)) == [0, 1, 2]
    assert out.getvalue().startswith("x: 3/3 in ")


def test_progress_chooses_by_stream():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress(range(2), desc="d", stream=io.StringIO()), LineProgress)
    terminal = Terminal()
    assert list(progress(range(2), desc="d", stream=terminal)) == [0, 1]
    assert "\r" in terminal.getvalue()  # tqdm's bar
    quiet = io.StringIO()
    assert list(progress(range(2), desc="d", disable=True, stream=quiet)) == [0, 1]
    assert quiet.getvalue() == ""
