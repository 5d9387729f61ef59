#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Results are read line by line by scripts while the tool still runs.
setvbuf(stdout, nil, _IOLBF, 0)
await SottoBench.main()
