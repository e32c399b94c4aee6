' reimage: joins the Active Directory domain named by the second
' argument (OU: the third, may be empty) with the credentials in the
' file named by the first (user, then password), deleting that file.
Option Explicit
Dim fso, f, user, pw, cs, rc, ou
If WScript.Arguments.Count < 2 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo domain.vbs CREDENTIALS-FILE DOMAIN [OU]"
  WScript.Quit 2
End If
Set fso = CreateObject("Scripting.FileSystemObject")
On Error Resume Next
Set f = fso.OpenTextFile(WScript.Arguments(0), 1)
user = f.ReadLine
pw = f.ReadLine
f.Close
fso.DeleteFile WScript.Arguments(0), True
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot read the credentials file: " & Err.Description
  WScript.Quit 1
End If
On Error GoTo 0
ou = Null
If WScript.Arguments.Count > 2 Then ou = WScript.Arguments(2)
rc = 1
For Each cs In GetObject("winmgmts:{impersonationLevel=impersonate}!\\.\root\cimv2").InstancesOf("Win32_ComputerSystem")
  rc = cs.JoinDomainOrWorkgroup(WScript.Arguments(1), pw, user, ou, 3)
Next
If rc <> 0 Then WScript.StdErr.WriteLine "JoinDomainOrWorkgroup returned " & rc
If rc = 0 Then WScript.Echo "joined " & WScript.Arguments(1) & ": takes effect at the next boot"
WScript.Quit rc
