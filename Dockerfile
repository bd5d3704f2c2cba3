# FlashKernel for users: CUDA 13 devel image + PyTorch + Triton, the package built inside.
# Not built by this project's CI (its machines have no Docker engine).
#   docker build -t flashkernel .  &&  docker run --gpus all flashkernel scripts/test.sh
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv git cmake ninja-build g++ libgtest-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/flashkernel
COPY requirements-dev.txt requirements-lock.txt ./
RUN pip install --no-cache-dir -r requirements-dev.txt -c requirements-lock.txt
COPY . .
RUN FLASHKERNEL_CUDA_ARCHS="80;90a" pip install --no-cache-dir --no-build-isolation .
CMD ["flashkernel", "info"]
