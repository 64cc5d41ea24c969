package exec

// responseOverhead bounds what ExecResponse needs beyond the two output byte
// strings: exit_code, timed_out, duration_ms and the fields' tags/lengths.
const responseOverhead = 64
