"""The facade's deployment verbs: ONNX export and streamed GeoTIFF prediction.

A mixin of :class:`~autoseg.predictor.SemanticSegmentor`, kept apart so the predictor module
holds the estimator itself (fit, predict, evaluate, save, load). Both verbs need only the
fitted state, the inference runtime and the ``say`` callback the predictor provides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autoseg.runtime import Runtime
from autoseg.state import PredictorState

if TYPE_CHECKING:  # rasterio and onnx are optional extras, imported when used
    from autoseg.raster_predict import RasterPrediction


class DeploymentMixin:
    """``export`` and ``predict_geotiff`` for a fitted predictor."""

    _fitted: Callable[[], PredictorState]
    _runtime: Callable[[], Runtime]
    _say: Callable[[str], None]

    def export(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the fitted model as ONNX, its pre/post-processing contract in the metadata.

        Plain LoRA is merged into ``qkv``; Conv-LoRA keeps its branch. See the README's
        "Export" section for the graph's inputs and outputs.

        Raises:
            OutputExistsError: ``path`` exists and ``overwrite`` is False.
            ExportDependencyError: ``onnx`` is missing (``pip install "autoseg[export]"``).

        """
        from autoseg.export import export_onnx

        state = self._fitted()
        return export_onnx(
            state.model,
            state.problem,
            path,
            backbone=state.config.model.backbone,
            peft_method=state.config.peft.method,
            overwrite=overwrite,
        )

    def predict_geotiff(
        self,
        source: str | Path,
        out_mask: str | Path,
        out_probabilities: str | Path | None = None,
        *,
        overwrite: bool = False,
        tile: bool | str = True,
        tile_size: int | None = None,
        overlap: float = 0.25,
        bands: Sequence[int] | None = None,
    ) -> RasterPrediction:
        """Predict a GeoTIFF block by block; write the mask (and probabilities) as GeoTIFFs.

        The outputs carry the input's CRS, transform and nodata; a raster larger than
        memory streams through. See the README's "GeoTIFF and multispectral" section.

        Args:
            source: The input GeoTIFF.
            out_mask: The mask ``.tif`` to write (the problem's mask values).
            out_probabilities: Optional probabilities ``.tif`` (float32, one band a class).
            overwrite: Replace existing outputs; the input is never replaced.
            tile: Windows at the model's scale (``True``), only for large blocks
                (``"auto"``), or each block shrunk whole to the model input (``False``).
            tile_size: Window side in pixels (default: the model input).
            overlap: Share of a window its neighbour overlaps (0 .. 0.9).
            bands: 1-based bands to read (default: those the model was trained on).

        Raises:
            GeoExtraMissingError: rasterio is missing (``pip install "autoseg[geo]"``).
            OutputExistsError: an output exists (without ``overwrite``) or is the input.

        """
        from autoseg.raster_predict import predict_geotiff

        state = self._fitted()
        return predict_geotiff(
            state.model,
            state.problem,
            self._runtime(),
            source,
            out_mask,
            out_probabilities,
            overwrite=overwrite,
            tile=tile,
            tile_size=tile_size,
            overlap=overlap,
            bands=bands,
            batch_size=state.config.env.eval_batch_size,
            say=self._say,
        )
