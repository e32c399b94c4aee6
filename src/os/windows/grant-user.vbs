' reimage grant: the local account named by the first argument, for a
' reservation's user. Its password comes from the file named by the second
' argument, which is deleted first thing; the third is 1 for an
' administrator. A missing account is made (IADsContainer::Create), an
' existing one it made (its Description) gets the new password and is
' enabled; an account of the image is never taken over. The account goes into
' Remote Desktop Users, and into Administrators only with 1 (out of it
' with 0). Groups are found by their well-known SIDs (S-1-5-32-555,
' S-1-5-32-544) through WMI's Win32_Group, never by their names, which
' are in the install's language.
Option Explicit
Dim user, path, admin, fso, stream, pw, account, said
If WScript.Arguments.Count <> 3 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo grant-user.vbs USER PASSWORD-FILE 0|1"
  WScript.Quit 2
End If
user = WScript.Arguments(0)
path = WScript.Arguments(1)
admin = (WScript.Arguments(2) = "1")
Set fso = CreateObject("Scripting.FileSystemObject")
On Error Resume Next
Set stream = CreateObject("ADODB.Stream")
stream.Type = 2
stream.Charset = "utf-8"
stream.Open
stream.LoadFromFile path
pw = stream.ReadText(-1)
stream.Close
fso.DeleteFile path, True
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot read and delete " & path & ": " & Err.Description
  WScript.Quit 1
End If
pw = Replace(pw, vbCr, vbLf)
If InStr(pw, vbLf) > 0 Then pw = Left(pw, InStr(pw, vbLf) - 1)
If Len(pw) = 0 Then
  WScript.StdErr.WriteLine "the password file was empty"
  WScript.Quit 1
End If
Set account = GetObject("WinNT://./" & user & ",user")
If Err.Number <> 0 Then
  Err.Clear
  Set account = GetObject("WinNT://.,computer").Create("user", user)
  account.SetPassword pw
  account.Description = "reimage: a reservation's user"
  account.SetInfo
  said = "user " & user & " created"
ElseIf account.Description <> "reimage: a reservation's user" Then
  WScript.StdErr.WriteLine "user " & user & " is an account of the image, not one reimage made: not taken over"
  WScript.Quit 1
Else
  account.SetPassword pw
  account.AccountDisabled = False
  account.SetInfo
  said = "user " & user & " there, new password"
End If
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot create or set " & user & ": " & Err.Description
  WScript.Quit 1
End If
Member "S-1-5-32-555", True
Member "S-1-5-32-544", admin
If admin Then said = said & ", administrator" Else said = said & ", no administrator"
WScript.Echo said & ", in Remote Desktop Users"

' Puts the account into the local group of well-known SID sid, or takes
' it out.
Sub Member(sid, want)
  Dim wmi, g, name, group
  Set wmi = GetObject("winmgmts:\\.\root\cimv2")
  For Each g In wmi.ExecQuery("SELECT Name FROM Win32_Group WHERE LocalAccount = TRUE AND SID = '" & sid & "'")
    name = g.Name
  Next
  If Len(name) = 0 Then
    WScript.StdErr.WriteLine "no local group with SID " & sid
    WScript.Quit 1
  End If
  Set group = GetObject("WinNT://./" & name & ",group")
  If want And Not group.IsMember(account.ADsPath) Then group.Add account.ADsPath
  If Not want And group.IsMember(account.ADsPath) Then group.Remove account.ADsPath
  If Err.Number <> 0 Then
    WScript.StdErr.WriteLine "cannot change the members of " & name & " (" & sid & "): " & Err.Description
    WScript.Quit 1
  End If
End Sub
