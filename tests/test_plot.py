import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import plot  # noqa: E402


def test_history_panels_follow_the_keys():
    fig = plot.plot_history({"step": [1, 2], "train_loss": [2.0, 1.0], "lr": [0.1, 0.05]})
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "learning rate"]
    plt.close(fig)


def test_image_grid_marks_mistakes_in_red():
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    fig = plot.image_grid(
        images, labels=[0, 1, 2], predictions=[0, 2, 2], classes=["a", "b", "c"], ncols=2
    )
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes[:3]]
    assert titles[1] == ("b\n→ c", "red") and titles[0][1] == "black"
    plt.close(fig)


def test_image_grid_adds_notes_to_titles():
    images = torch.rand(2, 1, 8, 8)
    fig = plot.image_grid(
        images, labels=[0, 1], predictions=[1, 1], notes=["p=0.97", "p=0.60"], ncols=2
    )
    assert [ax.get_title() for ax in fig.axes[:2]] == ["0\n→ 1\np=0.97", "1\n→ 1\np=0.60"]
    fig = plot.image_grid(images, notes=["a", "b"], ncols=2)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["a", "b"]
    plt.close("all")


def test_confusion_matrix_counts_and_report():
    matrix = plot.confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], classes=["a", "b", "c"])
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    report = plot.per_class_report([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert report["a"]["recall"] == 0.5 and report["b"]["precision"] == 0.5
    plt.close("all")


def test_decision_boundary_calls_predict_on_a_grid():
    seen = []

    def predict(points):
        seen.append(points.shape)
        return (points[:, 0] > 0).astype(float)

    plot.decision_boundary(
        predict, np.array([[-1.0, 0.0], [1.0, 1.0]]), np.array([0, 1]), resolution=50
    )
    assert seen == [(2500, 2)]
    plt.close("all")
