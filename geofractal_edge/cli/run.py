"""gfedge run BUNDLE --input FILE: run a bundle in the torch-free runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from geofractal_edge.cli.render import console, print_json


def run(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    input: Path | None = typer.Option(None, "--input", "-i", help="Inputs: .safetensors, .npz or .json (name -> array). Atlas without --input: recall the key's text."),
    key: str | None = typer.Option(None, "--key", "-k", help="Key name (bundle keys/) or a key file path."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write outputs: .safetensors, .npz or .json."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any part of the graph would not run on the target's first provider."),
    engine: bool = typer.Option(False, "--engine", help="Run engine.plan with TensorRT (made by `gfedge build`) instead of onnxruntime."),
    encoder: Path | None = typer.Option(None, "--encoder", "-e", help="The encoder bundle a text collective names (checked by hash); inputs are then its token ids and mask."),
    length: int | None = typer.Option(None, "--length", help="Atlas recall: characters to recall (default: the length the key records)."),
    text: list[str] = typer.Option([], "--text", "-t", help="Encoder bundles (and --encoder chains): raw text, tokenized by the bundle's own tokenizer; repeat for a batch."),
) -> None:
    """Check the bundle, load it, validate the inputs and run."""
    from geofractal_edge.runtimes.io import read_inputs, write_outputs
    from geofractal_edge.backends.placement import check_placement

    if engine:
        from geofractal_edge.backends.tensorrt import load_engine as load
    else:
        from geofractal_edge.runtimes import load
    chain = None
    if encoder is not None:
        from geofractal_edge.runtimes import load_chain

        chain = load_chain(bundle, encoder)
        check_placement(chain.encoder, strict=strict)
    session = chain.collective if chain else load(bundle)
    placement = check_placement(session, strict=strict)
    if key is not None:
        session.use_key(session.keys.from_file(Path(key)) if key.endswith(".safetensors") else key)
    if text:
        from geofractal_edge.runtimes.tokenize import embed

        outputs = embed(chain or session, list(text))
    elif input is None:
        _recall(session, placement, length=length, as_json=as_json)
        return
    else:
        graph = (chain.encoder if chain else session).manifest.graph
        feeds = read_inputs(input, graph.data_inputs, graph.dim_ranges)
        outputs = chain.run(feeds) if chain else session.run(feeds)
    if output is not None:
        write_outputs(output, outputs)
    summary = {
        "bundle": str(bundle),
        "key": session.active_key,
        "providers_used": list(session.providers_used),
        "placement": placement.to_dict(),
        "fallbacks": list(session.fallbacks),
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
    }
    labels = session.manifest.task.labels
    if chain is not None:
        summary["encoder"] = str(encoder)
    if labels and "logits" in outputs:
        summary["predicted"] = [labels[i] for i in np.asarray(outputs["logits"]).argmax(-1).reshape(-1)]
    vocab = session.manifest.task.vocab
    if vocab and "logits" in outputs:
        summary["decoded"] = "".join(vocab[i] for i in np.asarray(outputs["logits"]).argmax(-1).reshape(-1))
    if output is not None:
        summary["output_file"] = str(output)
    if as_json:
        print_json(summary)
        return
    console.print(placement.line(), soft_wrap=True)
    for name, meta in summary["outputs"].items():
        console.print(f"{name}: shape {meta['shape']} {meta['dtype']}")
    if "predicted" in summary:
        console.print(f"predicted: {', '.join(summary['predicted'][:20])}")
    if "decoded" in summary:
        console.print(f"decoded: {summary['decoded'][:200]!r}")


def _recall(session, placement, *, length: int | None, as_json: bool) -> None:
    """Atlas: the text the bound key stores, decoded torch-free, with its character accuracy."""
    from geofractal_edge.runtimes.text import recall, recall_report

    report = recall_report(session, recall(session, length=length))
    if as_json:
        print_json({**report, "placement": placement.to_dict()})
        return
    console.print(placement.line(), soft_wrap=True)
    print(report["text"])
    if "char_accuracy" in report:
        at_export = report.get("char_accuracy_at_export")
        console.print(f"char accuracy {report['char_accuracy']:.2f}%" + (f" (measured at export: {at_export:.2f}%)" if at_export is not None else ""))
