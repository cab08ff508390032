"""A collective of frozen-encoder streams: exported behind the MiniLM encoder's own bundle, linked
by the encoder's weights hash, chained in the runtime and in a Triton ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofractal_edge.errors import BundleError
from geofractal_edge.models.collective import CollectiveConfig, RouterCollective, save_checkpoint
from geofractal_edge.models.collective.text_data import topic_split


@pytest.fixture(scope="module")
def text_checkpoint(minilm_port, tmp_path_factory):
    from geofractal_edge.models.collective.train import train_text_collective

    config = CollectiveConfig.text(2).replace(epochs=8)
    collective, report = train_text_collective(config, ports={s.name: minilm_port for s in config.streams}, seed=0)
    path = tmp_path_factory.mktemp("text-collective") / "topics.safetensors"
    save_checkpoint(path, collective, report=report)
    return path, collective, report


@pytest.fixture(scope="module")
def text_bundles(text_checkpoint, tmp_path_factory):
    from geofractal_edge.pipeline import export_bundle

    out = tmp_path_factory.mktemp("text-bundles")
    return {p: export_bundle(family="collective", target="host-cpu", precision=p, model=text_checkpoint[0], out=out / p).path for p in ("fp32", "int8")}


def test_identical_text_towers_stack_into_one_graph(minilm_port):
    from geofractal_edge.export.trace import trace
    from geofractal_edge.models.collective.family import exportable_from_text_collective

    split = topic_split()
    split = type(split)(split.train_texts[:8], split.y_train[:8], split.test_texts[:8], split.y_test[:8])
    counts = {}
    for towers in (2, 4):
        config = CollectiveConfig.text(towers)
        collective = RouterCollective(config, ports={s.name: minilm_port for s in config.streams})
        counts[towers] = len(trace(exportable_from_text_collective(collective, name="t", source={}, split=split)).graph.node)
    assert counts[2] == counts[4], counts


def test_text_collective_verifies_and_runs_behind_its_encoder_bundle(text_checkpoint, text_bundles, encoder_bundle_factory, minilm_port):
    from geofractal_edge.artifacts import open_bundle
    from geofractal_edge.parity import verify_bundle
    from geofractal_edge.runtimes import load_chain

    _, collective, report = text_checkpoint
    for precision, path in text_bundles.items():
        parity = verify_bundle(open_bundle(path))
        assert parity.passed, (precision, [c for c in parity.checks if not c.passed])
        assert parity.metrics["accuracy"]["torch"] == pytest.approx(100 * report["accuracy"])
    link = open_bundle(text_bundles["fp32"]).manifest.to_dict()["task"]["encoder"]
    assert link["core_sha256"] == minilm_port.sha256 == open_bundle(encoder_bundle_factory("fp32")).manifest.to_dict()["model"]["core_sha256"]

    texts = topic_split().test_texts[:20]
    tokens = {k: v.numpy() for k, v in minilm_port.preprocess(texts).items()}
    chain = load_chain(text_bundles["fp32"], encoder_bundle_factory("fp32"))
    got = chain.run(tokens)
    with torch.no_grad():
        want, _ = collective.eval()(minilm_port.encode(texts))
    np.testing.assert_allclose(got["logits"], want.numpy(), atol=2e-4)  # tokens -> embedding bundle -> collective bundle == torch


def test_an_encoder_that_is_not_the_collectives_is_refused(text_bundles, bundle_factory):
    from geofractal_edge.runtimes import load_chain

    with pytest.raises(BundleError, match="is not the encoder .* was trained with"):
        load_chain(text_bundles["fp32"], bundle_factory("fp32"))  # an Atlas bundle in the encoder's place


def test_triton_ensemble_chains_encoder_and_collective(text_bundles, encoder_bundle_factory, tmp_path):
    model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason='tritonclient is not installed (pip install "tritonclient[grpc]")')
    from google.protobuf import text_format

    from geofractal_edge.export.triton import write_repository

    repo = write_repository([encoder_bundle_factory("fp32"), text_bundles["fp32"]], tmp_path / "repo", names=["minilm", "topics"], ensemble="topics_text")
    ensemble = text_format.Parse((repo.path / "topics_text" / "config.pbtxt").read_text(encoding="utf-8"), model_config.ModelConfig())
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == ("minilm", "topics")
    assert second.input_map["sentence_embedding"] == first.output_map["sentence_embedding"]
    assert [i.name for i in ensemble.input] == ["input_ids", "attention_mask"]
    assert {"logits", "routes", "margins"} <= {o.name for o in ensemble.output}


def test_gfedge_run_with_encoder_predicts_topics_and_refuses_a_foreign_encoder(text_bundles, encoder_bundle_factory, bundle_factory, minilm_port, tmp_path):
    import json

    from tests.conftest import gfedge
    from tests.integration.test_cli import assert_one_line_error

    tokens = {k: v.tolist() for k, v in minilm_port.preprocess(topic_split().test_texts[:3]).items()}
    (tmp_path / "tokens.json").write_text(json.dumps(tokens), encoding="utf-8")
    done = gfedge("run", text_bundles["fp32"], "--encoder", encoder_bundle_factory("fp32"), "--input", tmp_path / "tokens.json", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["predicted"]) == 3 and set(summary["predicted"]) <= {"compound", "debugger", "specialnames", "types"}
    assert summary["outputs"]["sentence_embedding"]["shape"] == [3, minilm_port.dim]
    assert_one_line_error(gfedge("run", text_bundles["fp32"], "--encoder", bundle_factory("fp32"), "--input", tmp_path / "tokens.json"), "is not the encoder", "gfedge export --family collective-encoder")


def test_a_collective_mixing_image_and_encoder_streams_is_refused_at_lowering(minilm_port):
    from geofractal_edge.errors import GfedgeError
    from geofractal_edge.models.collective import StreamConfig
    from geofractal_edge.models.collective.lowering import lower

    config = CollectiveConfig.text(1).replace(streams=(StreamConfig("pixels"), StreamConfig("text0", kind="frozen")))
    with pytest.raises(GfedgeError, match="mixes a frozen encoder with other streams"):
        lower(RouterCollective(config, ports={"text0": minilm_port}))
