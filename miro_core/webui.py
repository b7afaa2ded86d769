"""The page of ``miro serve``: gradio Blocks laid over :mod:`miro_core.serve_logic`.

gradio is an optional extra (``pip install -e '.[ui]'``) and is imported only here, inside functions.
Every check and every computation lives in ``serve_logic``; this module lays out widgets and turns
refused requests into a message on the page, so bad input never takes the server down.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from miro_core.errors import MiroError
from miro_core.serve_logic import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    SETTING_NAMES,
    ServeSession,
    scores_markdown,
    slider_step,
)

log = logging.getLogger(__name__)

TITLE = "MIRO: reward-controlled sampling"
INTRO = (
    "Ask for more of one reward and less of another without retraining: the **target** `s+` of a reward is the "
    "level the sample is pushed towards, the **negative target** `s-` the level it is pushed away from "
    "(MIRO's multi-reward guidance, `v = (1 + w) v(c, s+) - w v(c-, s-)`). Tick *side by side* to render the "
    "same seed at two settings."
)

#: Let each image's caption (its measured scores) wrap instead of being cut; no empty space under the images.
CSS = """
.miro-gallery .caption-label { white-space: normal !important; max-width: 100% !important; opacity: 0.9 !important; }
.miro-gallery .grid-wrap { min-height: 0 !important; height: auto !important; }
"""


def import_gradio() -> Any:
    """gradio, or a MiroError that says how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise MiroError(
            "`miro serve` needs gradio, an optional extra: install it with `pip install -e '.[ui]'` "
            "(or `pip install 'gradio>=5'`); `make install` does this for you"
        ) from None
    return gradio


def css_goes_to_launch(gr: Any) -> bool:
    """gradio 6 takes ``css`` in ``launch()``, gradio 5 in ``Blocks()``."""
    return "css" in inspect.signature(gr.Blocks.launch).parameters


def hidden_api(gr: Any) -> dict[str, Any]:
    """Keep a UI-only event out of the API page (gradio 6: ``api_visibility``; gradio 5: ``api_name=False``)."""
    if "api_visibility" in inspect.signature(gr.Button.click).parameters:
        return {"api_visibility": "undocumented"}
    return {"api_name": False}


def element_id(*parts: str) -> str:
    """A DOM id from parts (reward keys may hold characters CSS selectors dislike)."""
    return "-".join("".join(c if c.isalnum() else "-" for c in part) for part in parts)


def build_app(session: ServeSession | None, error: str | None = None) -> Any:
    """The Blocks of the page; with no session, a page that shows ``error`` (why the run could not open)."""
    gr = import_gradio()
    style = {} if css_goes_to_launch(gr) else {"css": CSS}
    with gr.Blocks(title=TITLE, analytics_enabled=False, **style) as app:
        gr.Markdown(f"# {TITLE}")
        if session is None:
            gr.Markdown(f"**Cannot open the run.** {error or 'No run was given.'}", elem_id="status")
            return app
        keys = session.reward_keys
        gr.Markdown(INTRO + "\n\n" + session.describe_run(), elem_id="run-info")
        examples = session.pipe.example_prompts
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(
                    label="Prompt",
                    value=examples[0] if examples else "",
                    placeholder="a red circle left of a yellow square",
                    max_lines=3,
                    max_length=MAX_PROMPT_CHARS * 4,
                    elem_id="prompt",
                )
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[prompt], label="Example prompts of the run")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown("Ready: press **Generate**.", elem_id="status")
                with gr.Row():
                    num_images = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images", elem_id="num-images")
                    steps = gr.Slider(1, MAX_STEPS, value=30, step=1, label="Steps", elem_id="steps")
                with gr.Row():
                    samplers = session.samplers
                    sampler = gr.Dropdown(
                        samplers, value="euler" if "euler" in samplers else samplers[0], label="Sampler"
                    )
                    strategy = gr.Dropdown(
                        session.strategies, value=session.default_strategy, label="Guidance strategy",
                        elem_id="strategy",
                    )
                with gr.Row():
                    guidance = gr.Slider(
                        0, MAX_GUIDANCE, value=min(session.default_guidance, MAX_GUIDANCE), step=0.25,
                        label="Guidance scale w", elem_id="guidance",
                    )
                    seed = gr.Number(value=0, precision=0, label=f"Seed (0 to {MAX_SEED})", elem_id="seed")
                strategy_options = gr.Textbox(
                    label="Strategy options",
                    placeholder="schedule=linear, negative_text=same (isolate: target=KEY; tradeoff: reward_a=A, "
                    "reward_b=B, t=0.5)",
                    max_lines=1,
                    elem_id="strategy-options",
                )
                compare = gr.Checkbox(
                    label="Side by side: render the same seed at setting A and setting B",
                    value=False,
                    visible=bool(keys),
                    elem_id="compare",
                )
                sliders, accordions = [], []
                step = slider_step(session.num_bins)
                for name in SETTING_NAMES if keys else ():
                    with gr.Accordion(
                        f"Setting {name}: reward targets", open=True, visible=name == "A", elem_id=f"setting-{name}"
                    ) as accordion:
                        for key in keys:
                            with gr.Row():
                                sliders.append(gr.Slider(
                                    0, 1, value=1.0, step=step, label=f"{key}: target s+",
                                    elem_id=element_id(name, key, "target"),
                                ))
                                sliders.append(gr.Slider(
                                    0, 1, value=0.0, step=step, label=f"{key}: negative target s-",
                                    elem_id=element_id(name, key, "negative"),
                                ))
                    accordions.append(accordion)
            with gr.Column(scale=3):
                gallery_a = gr.Gallery(
                    label="Setting A" if keys else "Images", columns=4, height="auto", object_fit="contain",
                    elem_id="gallery-A",
                    elem_classes=["miro-gallery"],
                )
                gallery_b = gr.Gallery(
                    label="Setting B (same seed)", columns=4, height="auto", object_fit="contain", visible=False,
                    elem_id="gallery-B", elem_classes=["miro-gallery"],
                )
                scores = gr.Markdown(elem_id="scores")
                download = gr.DownloadButton("Download the grid (PNG)", elem_id="download")

        def on_generate(*values: Any) -> tuple[Any, ...]:
            unchanged = (gr.skip(), gr.skip(), gr.skip(), gr.skip())
            if len(values) < 9:
                raise gr.Error(f"expected {len(inputs)} input values (prompt, images, steps, sampler, guidance, "
                               f"strategy, strategy options, seed, side by side, then the reward sliders), "
                               f"got {len(values)}")
            try:
                request = session.validate(*values[:9], slider_values=values[9:])
                generation = session.generate(request)
            except MiroError as err:
                gr.Warning(str(err))
                return (*unchanged, f"**Not generated:** {err}")
            except Exception as err:  # a bug or a broken plugin: report it, keep serving other requests
                log.exception("sampling failed")
                gr.Warning(f"sampling failed: {type(err).__name__}: {err}")
                return (*unchanged, f"**Sampling failed** ({type(err).__name__}: {err}); the server keeps running.")
            return (
                generation.gallery(0),
                generation.gallery(1) if request.compare else [],
                scores_markdown(generation, keys, session.scorer.names),
                str(generation.grid_path),
                generation.status(),
            )

        def on_compare(enabled: bool) -> tuple[Any, ...]:
            return gr.update(visible=enabled), gr.update(visible=enabled)

        inputs = [prompt, num_images, steps, sampler, guidance, strategy, strategy_options, seed, compare, *sliders]
        outputs = [gallery_a, gallery_b, scores, download, status]
        # preprocess=False: the raw values reach ServeSession.validate, which answers every bad value (a string
        # for a number, None, NaN) with a message instead of gradio's bare conversion error
        gr.on(
            [generate.click, prompt.submit], on_generate, inputs=inputs, outputs=outputs, concurrency_limit=1,
            api_name="generate", preprocess=False,
        )
        if keys:
            compare.change(on_compare, inputs=[compare], outputs=[accordions[1], gallery_b], **hidden_api(gr))
    return app


def serve(session: ServeSession, host: str = "127.0.0.1", port: int = 7860, **launch: Any) -> Any:
    """Build the page, queue its requests (one sampling at a time) and serve it until interrupted."""
    gr = import_gradio()
    if css_goes_to_launch(gr):
        launch.setdefault("css", CSS)
    app = build_app(session)
    app.queue(default_concurrency_limit=1, max_size=32)
    launch.setdefault("show_error", True)  # API clients get gradio's own message (e.g. too few inputs), not null
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        allowed_paths=[str(session.output_dir)],
        **launch,
    )
    return app
