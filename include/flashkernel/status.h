// Errors raised by the public C++ API. Every op validates its arguments before launching and
// throws ArgumentError naming the offending argument; CUDA failures throw CudaError.
#pragma once
#include <stdexcept>
#include <string>

namespace flashkernel {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller passed something the op does not accept (wrong shape, dtype, alignment, ...).
class ArgumentError : public Error {
 public:
  ArgumentError(const std::string& op, const std::string& argument, const std::string& what)
      : Error(op + ": argument '" + argument + "' " + what), argument_(argument) {}
  const std::string& argument() const noexcept { return argument_; }

 private:
  std::string argument_;
};

// A resource limit was hit (for example the KV cache ran out of pages).
class OutOfResourcesError : public Error {
 public:
  using Error::Error;
};

// A CUDA runtime/driver call or a kernel launch failed.
class CudaError : public Error {
 public:
  using Error::Error;
};

}  // namespace flashkernel
