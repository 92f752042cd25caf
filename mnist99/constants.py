"""The numbers every part of mnist99 shares: MNIST's image shape and classes, the evaluation batch, the target."""

IMAGE_SIZE = 28
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)  # uint8 digits: as MNIST stores them and as the exported ensemble takes them
MODEL_INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # float32 in [0, 1]: what every member model takes
NUM_CLASSES = 10
# Batch for prediction and evaluation (no gradients, so larger than training's): fast on 2 CPU cores
# and small for any GPU.
EVAL_BATCH = 512
RUN_MODEL_ARTIFACT = "model/model.keras"  # where train and ensemble runs log their model
TARGET_ACCURACY = 0.99  # the accuracy the project is named after: time to it is what the benchmarks measure
