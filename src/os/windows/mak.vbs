' reimage: installs the product key in the file named by the first
' argument, deleting that file.
Option Explicit
Dim fso, f, key, svc
Set fso = CreateObject("Scripting.FileSystemObject")
On Error Resume Next
Set f = fso.OpenTextFile(WScript.Arguments(0), 1)
key = Trim(f.ReadLine)
f.Close
fso.DeleteFile WScript.Arguments(0), True
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot read the key file: " & Err.Description
  WScript.Quit 1
End If
For Each svc In GetObject("winmgmts:\\.\root\cimv2").InstancesOf("SoftwareLicensingService")
  svc.InstallProductKey key
  If Err.Number = 0 Then svc.RefreshLicenseStatus
Next
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "InstallProductKey failed: 0x" & Hex(Err.Number) & " " & Err.Description
  WScript.Quit 1
End If
WScript.Echo "product key installed"
