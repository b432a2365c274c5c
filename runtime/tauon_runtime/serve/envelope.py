"""Request envelopes as models: every wrong type is a 400 naming the field.

The Open Inference Protocol v2 request (``InferenceRequest``, ``RequestInput``,
``RequestOutput``, after KServe's ``v2_datamodels``), the ``/v1/predict`` JSON body and the
``/v1/feedback`` body. Validation is strict (a string is never an integer, a bool never a
number) and extra keys are ignored, as the protocol allows. Tensor contents (``data``) are left
to the codecs, which check them against the model's input.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from .errors import BadInput

__all__ = [
    "MAX_SAMPLES_PER_REQUEST",
    "FeedbackRequest",
    "InferenceRequest",
    "PredictRequest",
    "RequestInput",
    "RequestOutput",
    "parse",
]

MAX_SAMPLES_PER_REQUEST = 1024

Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class TensorParameters(_Envelope):
    binary_data_size: StrictInt | None = Field(None, ge=0)


class RequestInput(_Envelope):
    name: Name
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(max_length=8)
    datatype: Annotated[StrictStr, Field(max_length=16)]
    parameters: TensorParameters | None = None
    data: list[Any] | None = None  # flat or nested numbers; absent when sent as binary

    @property
    def binary_size(self) -> int | None:
        return self.parameters.binary_data_size if self.parameters else None

    @model_validator(mode="after")
    def _data_or_binary(self) -> RequestInput:
        if (self.data is None) == (self.binary_size is None):
            raise ValueError(
                f"input {self.name!r} needs exactly one of 'data' and "
                "parameters.binary_data_size (the binary tensor data extension)"
            )
        return self


class OutputParameters(_Envelope):
    binary_data: StrictBool | None = None
    classification: StrictInt | None = Field(None, ge=0, le=0)  # the extension is not offered


class RequestOutput(_Envelope):
    name: Name
    parameters: OutputParameters | None = None


class RequestParameters(_Envelope):
    binary_data_output: StrictBool = False


class InferenceRequest(_Envelope):
    id: Annotated[StrictStr, Field(max_length=1024)] | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(max_length=64)
    outputs: list[RequestOutput] | None = Field(None, max_length=64)

    def wants_binary(self, output: RequestOutput | None) -> bool:
        """The binary data extension: per output, else the request's binary_data_output."""
        if output is not None and output.parameters and output.parameters.binary_data is not None:
            return output.parameters.binary_data
        return bool(self.parameters and self.parameters.binary_data_output)


class PredictRequest(_Envelope):
    """``{"instances": [sample, ...]}``, ``{"array": sample_or_batch}``, for a tabular model
    ``{"features": {name: value, ...}}`` (or a list of such rows), for a text model
    ``{"text": "..."}`` (or a list of texts)."""

    instances: list[Any] | None = Field(None, min_length=1, max_length=MAX_SAMPLES_PER_REQUEST)
    array: list[Any] | None = None
    features: dict[str, Any] | list[dict[str, Any]] | None = None
    text: str | list[str] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        given = [v for v in (self.instances, self.array, self.features, self.text) if v is not None]
        if len(given) != 1:
            raise ValueError(
                'the JSON body must be {"instances": [sample, ...]}, {"array": sample_or_batch}, '
                'for a tabular model {"features": {name: value, ...}}, or for a text model '
                '{"text": "..."}'
            )
        return self


def _label(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 1024:
        raise ValueError("must be at most 1024 characters")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return str(value)
    raise ValueError("must be a string (one of the model's classes)")


def _finite_number(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("must be a finite number within the range of a double")
    return number


Label = Annotated[str | None, BeforeValidator(_label)]


class FeedbackRequest(_Envelope):
    prediction_id: StrictStr = Field(alias="predictionId", min_length=1, max_length=128)
    label: Label = None
    true_label: Label = Field(None, alias="trueLabel")
    score: Annotated[float | None, BeforeValidator(_finite_number)] = None

    @model_validator(mode="after")
    def _something_to_store(self) -> FeedbackRequest:
        if self.label is not None and self.true_label is not None and self.label != self.true_label:
            raise ValueError("'label' and 'trueLabel' disagree; send one of them")
        if self.given_label is None and self.score is None:
            raise ValueError("send the true 'label' (or 'trueLabel'), a 'score', or both")
        return self

    @property
    def given_label(self) -> str | None:
        return self.label if self.label is not None else self.true_label


M = TypeVar("M", bound=BaseModel)


def _where(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse(model: type[M], value: Any, what: str) -> M:
    """Validate ``value`` as ``model``; a :class:`BadInput` names each wrong field (up to 3)."""
    if not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False, include_input=False)[:3]:
            message = str(err["msg"]).removeprefix("Value error, ")
            where = _where(tuple(err["loc"]))
            problems.append(f"{where}: {message}" if where else message)
        more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
        raise BadInput("; ".join(problems) + more) from None
