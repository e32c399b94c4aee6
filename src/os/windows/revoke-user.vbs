' reimage revoke: the local account named by the first argument goes. It
' is disabled first (IADsUser AccountDisabled), so no new logon starts;
' then each of its sessions is logged off (query session USER, logoff ID:
' VCL's Windows.pm logoff_users uses qwinsta and logoff), then the account
' is deleted (IADsContainer::Delete). No such account is no error: revoke
' is idempotent. An account reimage did not make (its Description) is left
' alone.
Option Explicit
Dim user, account, shell, ex, line, words, i, n
If WScript.Arguments.Count <> 1 Then
  WScript.StdErr.WriteLine "usage: cscript //nologo revoke-user.vbs USER"
  WScript.Quit 2
End If
user = WScript.Arguments(0)
On Error Resume Next
Set account = GetObject("WinNT://./" & user & ",user")
If Err.Number <> 0 Then
  WScript.Echo "no user " & user & ": nothing to remove"
  WScript.Quit 0
End If
If account.Description <> "reimage: a reservation's user" Then
  WScript.StdErr.WriteLine "user " & user & " is not one reimage made: left alone"
  WScript.Quit 1
End If
account.AccountDisabled = True
account.SetInfo
Set shell = CreateObject("WScript.Shell")
Set ex = shell.Exec("query session " & user)
n = 0
Do While Not ex.StdOut.AtEndOfStream
  line = Trim(Replace(Replace(ex.StdOut.ReadLine(), ">", " "), vbTab, " "))
  Do While InStr(line, "  ") > 0
    line = Replace(line, "  ", " ")
  Loop
  words = Split(line)
  For i = 0 To UBound(words) - 1
    If LCase(words(i)) = LCase(user) And IsNumeric(words(i + 1)) Then
      shell.Run "logoff " & words(i + 1), 0, True
      n = n + 1
    End If
  Next
Loop
Err.Clear
GetObject("WinNT://.,computer").Delete "user", user
If Err.Number <> 0 Then
  WScript.StdErr.WriteLine "cannot delete " & user & ": " & Err.Description
  WScript.Quit 1
End If
WScript.Echo "user " & user & " logged off (" & n & " sessions) and removed"
