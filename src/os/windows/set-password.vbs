' reimage: sets the password of the account below from the file named
' by the first argument, then deletes that file.
Option Explicit
Dim path, fso, stream, pw, account
If WScript.Arguments.Count <> 1 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo set-password.vbs PASSWORD-FILE"
  WScript.Quit 2
End If
path = WScript.Arguments(0)
Set fso = CreateObject("Scripting.FileSystemObject")
On Error Resume Next
Set stream = CreateObject("ADODB.Stream")
stream.Type = 2
stream.Charset = "utf-8"
stream.Open
stream.LoadFromFile path
pw = stream.ReadText(-1)
stream.Close
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot read " & path & ": " & Err.Description
  fso.DeleteFile path, True
  WScript.Quit 1
End If
fso.DeleteFile path, True
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot delete " & path & ": " & Err.Description
  WScript.Quit 1
End If
pw = Replace(pw, vbCr, vbLf)
If InStr(pw, vbLf) > 0 Then pw = Left(pw, InStr(pw, vbLf) - 1)
If Len(pw) = 0 Then
  WScript.StdErr.WriteLine "the password file was empty"
  WScript.Quit 1
End If
Set account = GetObject("WinNT://./@user@,user")
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "no account @user@: " & Err.Description
  WScript.Quit 1
End If
account.SetPassword pw
If Err.Number = 0 Then account.SetInfo
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot set the password of @user@: " & Err.Description
  WScript.Quit 1
End If
WScript.Echo "password of @user@ set"
