"""The GPU quota page's arithmetic and rendering (its live path, a logged-in browser against the real API
server, is tests/ui/test_airflow_ui.py)."""

from __future__ import annotations

from mlplatform.gpu import quota_page


def test_every_profile_pool_has_a_price_and_cost_is_hours_times_price():
    price = quota_page.prices()
    assert set(price) >= {"gpu_h100", "gpu_a100", "gpu_l4", "gpu_mig_1g10gb"}
    hours = {"support-ml": {"gpu_h100": 2.0, "gpu_l4": 10.0}, "risk": {"gpu_local": 1.0}}
    cost = quota_page.cost_by_team(hours, price)
    assert cost["support-ml"] == round(2.0 * price["gpu_h100"] + 10.0 * price["gpu_l4"], 2)
    assert cost["risk"] is None  # gpu_local has no price: unknown, not free


def test_the_page_escapes_what_it_shows_and_links_each_task_to_its_run():
    doc = {
        "generated_at": "2026-12-01T10:00:00+00:00",
        "prices": {"gpu_h100": 4.5},
        "gpu_hours": {"support-ml": {"gpu_h100": 1.5}},
        "pools": [
            {
                "name": "gpu_h100",
                "slots": 8,
                "source": "<script>alert(1)</script>",
                "gpu": True,
                "include_deferred": True,
                "used": 2,
                "queued": 1,
                "scheduled": 0,
                "deferred": 0,
                "open": 6,
                "holding": [
                    {
                        "dag_id": "ml_pipeline",
                        "run_id": "manual__x",
                        "task_id": "train",
                        "map_index": -1,
                        "state": "running",
                        "pool_slots": 2,
                        "priority_weight": 100,
                        "priority": "high",
                        "since": None,
                    }
                ],
                "waiting": [],
            }
        ],
    }
    page = quota_page.render(doc, "http://airflow:8080")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert "href='http://airflow:8080/dags/ml_pipeline/runs/manual__x'" in page
    assert "$6.75" in page
    assert "(counted)" in page  # deferred tasks keep their slots in this pool


def test_a_task_shows_its_runs_priority_level():
    assert [quota_page.priority_level(w) for w in (100, 10, 1)] == ["high", "normal", "low"]
    assert quota_page.priority_level(7) == "weight 7"  # a non-GPU task's summed weight, shown as it is
    doc = {
        "generated_at": "2026-12-01T10:00:00+00:00",
        "prices": {},
        "gpu_hours": {},
        "pools": [
            {
                "name": "gpu_h100__search",
                "slots": 2,
                "source": "search's share",
                "gpu": True,
                "include_deferred": True,
                "used": 0,
                "queued": 0,
                "scheduled": 1,
                "deferred": 0,
                "open": 2,
                "holding": [],
                "waiting": [
                    {
                        "dag_id": "train_on_cluster",
                        "run_id": "r1",
                        "task_id": "train",
                        "map_index": -1,
                        "state": "scheduled",
                        "pool_slots": 2,
                        "priority_weight": 1,
                        "priority": "low",
                        "since": None,
                    }
                ],
            }
        ],
    }
    assert "<span class='priority'>low</span>" in quota_page.render(doc, "")
