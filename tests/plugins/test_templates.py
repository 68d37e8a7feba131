"""XCom templates read only keys a step's declared result has (mlsteps/contract/results.py)."""

from __future__ import annotations

import jinja2
import pytest

from step_tasks.templates import xcom


class FakeTi:
    """Just ``xcom_pull``: the task results a rendered template reads."""

    def __init__(self, results: dict[str, dict]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str) -> dict | None:
        return self.results.get(task_ids)


def render(template: str, results: dict[str, dict]) -> str:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return environment.from_string(template).render(ti=FakeTi(results))


@pytest.mark.parametrize(
    ("template", "results", "rendered"),
    [
        (xcom("evaluate", "model_version"), {"evaluate": {"model_version": "7"}}, "7"),
        (
            xcom(["train_on_gpu", "train_on_cpu"], "model_version", step="train"),
            {"train_on_cpu": {"model_version": "3"}},
            "3",
        ),
        (
            xcom("evaluate", "champion_version", default="none"),
            {"evaluate": {"champion_version": None}},
            "none",
        ),
    ],
    ids=[
        "a_declared_key_renders_the_upstream_value",
        "the_first_branch_that_ran_wins",
        "the_default_renders_for_an_empty_field",
    ],
)
def test_a_template_renders_the_upstream_result(
    template: str, results: dict[str, dict], rendered: str
) -> None:
    assert render(template, results) == rendered


@pytest.mark.parametrize(
    ("task", "key", "message"),
    [
        ("evaluate", "version", "step 'evaluate' has no result key 'version'"),
        ("no_such_step", "summary", "step 'no-such-step' is not declared"),
    ],
    ids=["a_key_the_result_does_not_have", "a_step_whose_result_is_not_declared"],
)
def test_an_undeclared_result_is_refused_when_the_dag_is_built(task: str, key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        xcom(task, key)


def test_every_step_declares_its_result() -> None:
    assert xcom("promote", "champion_version") == (
        "{{ ((ti.xcom_pull(task_ids='promote')) or {}).get('champion_version') }}"
    )


def test_several_tasks_need_the_step_named() -> None:
    with pytest.raises(ValueError, match="name the step"):
        xcom(["train_on_gpu", "train_on_cpu"], "model_version")
