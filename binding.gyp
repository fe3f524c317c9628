{
  "targets": [
    {
      "target_name": "covenant",
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++14", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native/include"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS"],
      "sources": [
        "native/core/thread_pool.cpp",
        "native/core/sha256.cpp",
        "native/core/rng.cpp",
        "native/core/crc32c.cpp",
        "native/core/hmac_sha256.cpp",
        "native/kernels/cpu/gemm_ref.cpp",
        "native/kernels/cpu/gemm_packed.cpp",
        "native/kernels/cpu/gemm_blas.cpp",
        "native/kernels/cpu/gemm.cpp",
        "native/kernels/cpu/layernorm.cpp",
        "native/kernels/cpu/gelu.cpp",
        "native/kernels/cpu/attention_naive.cpp",
        "native/kernels/cpu/attention_flash.cpp",
        "native/kernels/cpu/crossentropy.cpp",
        "native/kernels/cpu/adamw.cpp",
        "native/model/gpt.cpp",
        "native/model/round_delta.cpp",
        "native/comm/socket.cpp",
        "native/comm/handshake.cpp",
        "native/comm/ring_plan.cpp",
        "native/comm/transcript.cpp",
        "native/comm/ring_allreduce.cpp",
        "native/quant/quantize.cpp",
        "native/quant/kernels_scalar.cpp",
        "native/quant/kernels_avx2.cpp",
        "native/quant/kernels_avx512.cpp",
        "native/quant/error_feedback.cpp",
        "native/addon/addon.cpp",
        "native/addon/engine_wrap.cpp",
        "native/addon/comm_wrap.cpp",
        "native/addon/quant_wrap.cpp"
      ],
      "libraries": ["-lpthread"]
    }
  ]
}
