"""The loopback services that other tests rely on really answer."""

from mlsteps.platform.lake import Lake


def test_s3_lake_round_trip(s3_lake: str) -> None:
    lake = Lake(s3_lake)
    lake.write_json("a/b.json", {"x": 1})
    assert lake.read_json("a/b.json") == {"x": 1}
    assert lake.list_dir("a") == ["b.json"]


def test_mlflow_server_answers(mlflow_tracking) -> None:
    import mlflow

    client = mlflow.MlflowClient(mlflow_tracking.tracking_uri)
    experiment = client.create_experiment("smoke")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics["m"] == 1.0
