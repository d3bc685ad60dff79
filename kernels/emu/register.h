// Included after a kernel file by the generated translation units: registers each entry point
// with an invoker that calls it with cuLaunchKernel's argument pointers, cast to its parameters.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <utility>

namespace emu {
using Invoker = std::function<void(void**)>;
std::map<std::string, Invoker>& registry();

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

struct Registration {
    template <class... A>
    Registration(const char* name, void (*kernel)(A...)) {
        registry()[name] = [kernel](void** args) { call(kernel, args, std::index_sequence_for<A...>{}); };
    }
};
}  // namespace emu
