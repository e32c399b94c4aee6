' reimage: sets the DNS servers named by the arguments, in order, on
' every network adapter that has IP enabled
' (Win32_NetworkAdapterConfiguration.SetDNSServerSearchOrder: 0 done,
' 1 done once the computer restarts).
Option Explicit
Dim servers(), i, nic, rc, n, bad
If WScript.Arguments.Count < 1 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo dns.vbs SERVER..."
  WScript.Quit 2
End If
ReDim servers(WScript.Arguments.Count - 1)
For i = 0 To WScript.Arguments.Count - 1
  servers(i) = WScript.Arguments(i)
Next
n = 0
bad = 0
For Each nic In GetObject("winmgmts:\\.\root\cimv2").ExecQuery("SELECT * FROM Win32_NetworkAdapterConfiguration WHERE IPEnabled = True")
  rc = nic.SetDNSServerSearchOrder(servers)
  If rc = 0 Or rc = 1 Then
    n = n + 1
  Else
    bad = rc
    WScript.StdErr.WriteLine "SetDNSServerSearchOrder returned " & rc & " on " & nic.Description
  End If
Next
If bad <> 0 Then WScript.Quit bad
If n = 0 Then
  WScript.StdErr.WriteLine "no network adapter with IP enabled"
  WScript.Quit 1
End If
WScript.Echo "DNS servers set on " & n & " adapter(s)"
