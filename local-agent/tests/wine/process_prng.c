/*
 * bcryptprimitives.dll for Wine 8 only, built by the Windows tests with
 * mingw-w64 and placed beside the test's copy of local-agent.exe.
 *
 * Rust's standard library (1.78 and later) takes its random bytes from
 * ProcessPrng in bcryptprimitives.dll, which Windows 10 and 11 have and
 * Wine 8.0 lacks, so under Wine 8 the program does not start. This DLL
 * gives Wine that one entry point, backed by RtlGenRandom (advapi32's
 * SystemFunction036). It never ships: the release archives hold the .exe
 * alone, which uses the system's own DLL on Windows.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
