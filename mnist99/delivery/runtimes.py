"""Exported ``.onnx`` and ``.tflite`` files run by ONNX Runtime and LiteRT behind the Keras model's contract:
``predict(uint8 (N, 28, 28)) -> float32 (N, 10)``, so stages and benchmarks compare runtimes with one call."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mnist99.console import library_info_muted, muted_stderr
from mnist99.constants import EVAL_BATCH, IMAGE_SHAPE, NUM_CLASSES
from mnist99.data.images import check_batch
from mnist99.delivery.forward import predict_probs


class ExportedModel:
    """An exported file behind ``predict``; subclasses open it (``__init__``) and run one batch (``run``)."""

    runtime = ""  # the name runs and benchmarks report (tag ``mnist99.runtime``)

    def run(self, digits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def custom_ops(self) -> list[str]:
        """Ops of the file that its runtime does not have built in (none unless a subclass finds some)."""
        return []

    def predict(self, images: np.ndarray, batch_size: int = EVAL_BATCH, verbose: int = 0) -> np.ndarray:
        """(N, 10) float32 probabilities of uint8 (N, 28, 28) digits, ``batch_size`` at a time.

        The signature is Keras' (``verbose`` is accepted and ignored), so callers need not know the runtime.
        Raises InputError for what :func:`mnist99.data.images.check_batch` refuses.
        """
        return predict_probs(self, check_batch(images), batch_size)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """Keras' ``predict_on_batch``: one batch of digits in one runtime call (InputError as :meth:`predict`)."""
        return self.run(check_batch(images)).astype(np.float32, copy=False)


class OnnxModel(ExportedModel):
    runtime = "onnxruntime"

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_contract(path, [(i.type, i.shape) for i in inputs], [(o.type, o.shape) for o in outputs],
                       digits_type="tensor(uint8)", probs_type="tensor(float)")
        self.input_name = inputs[0].name

    def run(self, digits: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: digits})[0]


class LiteRTModel(ExportedModel):
    """A ``.tflite`` file on LiteRT's interpreter, its input resized to each batch (the file holds batch 1)."""

    runtime = "litert"

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
        (self.input, *more_inputs), outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        check_contract(path, [(d["dtype"], list(d["shape_signature"])) for d in [self.input, *more_inputs]],
                       [(d["dtype"], list(d["shape_signature"])) for d in outputs],
                       digits_type=np.uint8, probs_type=np.float32)
        self.output_index = outputs[0]["index"]
        self.batch = 0
        self.path = path

    def run(self, digits: np.ndarray) -> np.ndarray:
        if len(digits) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(digits), *IMAGE_SHAPE])
            with muted_stderr(library_info_muted()):  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                self.interpreter.allocate_tensors()
            self.batch = len(digits)
        self.interpreter.set_tensor(self.input["index"], digits)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def custom_ops(self) -> list[str]:
        """The custom ops in the file's operator table, e.g. ``FlexSinh`` (a TensorFlow kernel the plain
        LiteRT runtime lacks), read from the flatbuffer itself rather than from what the interpreter ran."""
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAsModel(self.path.read_bytes(), 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        # builtin codes above 127 live in BuiltinCode, older ones in DeprecatedBuiltinCode: the larger is the op
        return [code.CustomCode().decode() for code in codes
                if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CUSTOM]


# file suffix -> (export format, its runtime); the format names the extra a missing runtime comes from
RUNTIMES: dict[str, tuple[str, type[ExportedModel]]] = {".onnx": ("onnx", OnnxModel), ".tflite": ("litert", LiteRTModel)}


def check_contract(path: Path, inputs: list, outputs: list, digits_type, probs_type) -> None:
    """Refuse a file that is not one uint8 (N, 28, 28) input to one float32 (N, 10) output, naming what it is.

    Args:
        inputs, outputs: (element type, shape) per tensor, as the runtime reports them (batch: any value).
    """
    digits_ok = len(inputs) == 1 and inputs[0][0] == digits_type and list(inputs[0][1][1:]) == list(IMAGE_SHAPE)
    probs_ok = len(outputs) == 1 and outputs[0][0] == probs_type and list(outputs[0][1][1:]) == [NUM_CLASSES]
    if not (digits_ok and probs_ok):
        raise ValueError(f"{path.name} maps {inputs} to {outputs}, expected one uint8 (N, 28, 28) input "
                         "and one float32 (N, 10) output (export the ensemble with `mnist99 export`)")
