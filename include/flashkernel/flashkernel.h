// Umbrella header: the whole public C++ API of FlashKernel.
#pragma once
#include "flashkernel/attention.h"
#include "flashkernel/device_info.h"
#include "flashkernel/gelu_linear.h"
#include "flashkernel/kv_cache.h"
#include "flashkernel/layernorm.h"
#include "flashkernel/models/gpt2.h"
#include "flashkernel/reduce.h"
#include "flashkernel/status.h"
#include "flashkernel/rope.h"
#include "flashkernel/tensor.h"
#include "flashkernel/vector_add.h"
