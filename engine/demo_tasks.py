"""The tasks of ``joblog demo``: a small render farm, a flaky download, a model pipeline.

Run them on a worker of your own with ``joblog worker --tasks engine.demo_tasks``.
"""

from __future__ import annotations

import hashlib
import time

from engine.worker import JobContext, task


@task
def render_frame(ctx: JobContext, shot: str, frame: int, samples: int = 24) -> str:
    """Renders one frame of a shot, reporting progress per sample pass (cgkit's JobProc)."""
    for done in range(1, samples + 1):
        ctx.check_cancelled()
        time.sleep(0.02 + (frame % 5) * 0.008)
        ctx.set_progress(done, total=samples)
        ctx.set_status_line(f"{shot} frame {frame}: {done}/{samples} samples")
    return f"{shot}/frame-{frame:03d}.exr"


@task
def assemble_shot(ctx: JobContext, shot: str, frames: int) -> str:
    """Assembles a shot's frames into a movie; runs once every frame (sub-job) completed."""
    for frame in range(1, frames + 1):
        ctx.set_progress(frame, total=frames)
        ctx.set_status_line(f"encoding frame {frame}/{frames}")
        time.sleep(0.03)
    return f"{shot}.mov"


@task(retries=3, retry_backoff=0.5, retry_on=["ConnectionError"])
def fetch_assets(ctx: JobContext, url: str) -> dict[str, object]:
    """Downloads the assets of a shot; the mirror times out on the first attempt."""
    ctx.set_status_line(f"GET {url} (attempt {ctx.attempt})")
    time.sleep(0.3)
    if ctx.attempt == 1:
        raise ConnectionError(f"{url}: mirror timed out after 30 s")
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return {"url": url, "sha256": digest, "attempt": ctx.attempt}


@task
def train_model(ctx: JobContext, epochs: int = 50) -> dict[str, float]:
    """Trains a model for ``epochs`` epochs; stops at once when canceled."""
    loss = 1.0
    for epoch in range(1, epochs + 1):
        if ctx.wait_cancelled(0.1):
            ctx.check_cancelled()
        loss *= 0.95
        ctx.set_progress(epoch, total=epochs)
        ctx.set_status_line(f"epoch {epoch}/{epochs} loss {loss:.3f}")
    return {"loss": round(loss, 4)}


@task
def evaluate_model(ctx: JobContext) -> dict[str, float]:
    """Evaluates the trained model (never runs in the demo: its input is canceled)."""
    time.sleep(0.2)
    return {"accuracy": 0.93}


@task
def publish_report(ctx: JobContext, channel: str = "#ml") -> str:
    """Publishes the evaluation (abandoned in the demo along with evaluate_model)."""
    return f"posted to {channel}"


@task
def check_plate(ctx: JobContext, path: str) -> str:
    """Checks a plate before rendering; a wrong format is a fatal job exception (Flux)."""
    if not path.endswith(".exr"):
        ctx.raise_exception("BadPlate", f"{path} is not an OpenEXR image", severity=0)
    return path
