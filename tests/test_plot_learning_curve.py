"""tools/plot_learning_curve.py: log variants go to their kind's panel; the loss is smoothed."""
import numpy as np

from tools import plot_learning_curve as plot


def test_variants_are_sorted_by_the_kind_of_their_model():
    assert plot.kind_of("ldlc-openpose-t6 backbone + initial stage, stop 17 CPU run (not kept)") == "bottom-up"
    assert plot.kind_of("ldlc-openpose-t6-fast") == "bottom-up"
    assert plot.kind_of("mnv2-hwloss restarted at lr 3e-4 (not kept)") == "top-down"
    assert plot.kind_of("centernet-person") == "detector"
    assert plot.kind_of("someone else's network") is None


def test_runs_not_kept_are_grey_and_kept_ones_keep_their_colour():
    colours = {}
    assert plot.style("ldlc-openpose-t6 GPU slice (not kept)", colours) == {"color": "0.6", "linestyle": "--"}
    first = plot.style("ldlc-openpose-t6", colours)
    assert plot.style("mnv2-hwloss", colours) != first and plot.style("ldlc-openpose-t6", colours) == first


def test_running_mean_averages_the_last_rows():
    np.testing.assert_allclose(plot.running_mean([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])


def test_the_plot_is_written(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("time,variant,step,images_seen,loss,images_per_s,AP,hardware\n"
                   "t,ldlc-openpose-t6,1,100,200.0,3.0,,cpu\nt,ldlc-openpose-t6,2,200,190.0,3.0,0.1,cpu\n"
                   "t,centernet-person,1,100,1.0,3.0,0.2,cpu\n")
    plot.main(["--log", str(log), "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").stat().st_size > 10_000
